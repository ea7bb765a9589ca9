-- Remediation: which process works an incident (a lease), the plan's steps, and locks on the
-- things actions change. Times are RFC 3339 text, as in 0001.
ALTER TABLE incidents ADD COLUMN claimed_by       TEXT;
ALTER TABLE incidents ADD COLUMN claim_expires_at TEXT;
ALTER TABLE incidents ADD COLUMN work_done_at     TEXT;

CREATE TABLE plan_steps (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id   INTEGER NOT NULL REFERENCES incidents (id),
    seq           INTEGER NOT NULL,
    attempt_group INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    target        TEXT    NOT NULL,
    decision      TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    reason        TEXT    NOT NULL DEFAULT '',
    output        TEXT    NOT NULL DEFAULT '{}',
    decided_by    TEXT,
    decided_at    TEXT,
    started_at    TEXT,
    finished_at   TEXT,
    CONSTRAINT plan_steps_incident_seq UNIQUE (incident_id, seq)
);
CREATE INDEX plan_steps_action_target ON plan_steps (name, target, started_at);

CREATE TABLE target_locks (
    target      TEXT PRIMARY KEY,
    incident_id INTEGER NOT NULL,
    holder      TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL
);
