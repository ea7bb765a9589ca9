-- Remediation: which process works an incident (a lease), the plan's steps, and locks on the
-- things actions change (one PVC is never expanded by two incidents at once).
ALTER TABLE incidents ADD COLUMN claimed_by       TEXT;
ALTER TABLE incidents ADD COLUMN claim_expires_at TIMESTAMPTZ;
-- Set when the engine has nothing more to do for the incident (remediated, escalated, dry run
-- recorded, alert resolved); an open incident without it is picked up again after a restart.
ALTER TABLE incidents ADD COLUMN work_done_at     TIMESTAMPTZ;
CREATE INDEX incidents_pending_work ON incidents (id) WHERE status = 'open' AND work_done_at IS NULL;

CREATE TABLE plan_steps (
    id            BIGSERIAL PRIMARY KEY,
    incident_id   BIGINT      NOT NULL REFERENCES incidents (id),
    seq           INTEGER     NOT NULL,
    attempt_group INTEGER     NOT NULL,
    kind          TEXT        NOT NULL,
    name          TEXT        NOT NULL,
    target        TEXT        NOT NULL,
    decision      TEXT        NOT NULL,
    state         TEXT        NOT NULL,
    reason        TEXT        NOT NULL DEFAULT '',
    output        JSONB       NOT NULL DEFAULT '{}',
    decided_by    TEXT,
    decided_at    TIMESTAMPTZ,
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    CONSTRAINT plan_steps_incident_seq UNIQUE (incident_id, seq)
);
CREATE INDEX plan_steps_action_target ON plan_steps (name, target, started_at);

CREATE TABLE target_locks (
    target      TEXT PRIMARY KEY,
    incident_id BIGINT      NOT NULL,
    holder      TEXT        NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
