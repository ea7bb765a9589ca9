-- The action gate. A claim epoch (fencing token) incremented by every new claim of an incident:
-- a step moves only while the mover's epoch is current. Every start of an action (verifications
-- count as rerun_backup) is recorded, for cooldowns, the per-incident attempt cap and the
-- rolling action budget across all incidents and replicas. One per-installation key for the
-- HMAC fingerprints of secret values in evidence.
ALTER TABLE incidents ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT 0;

CREATE TABLE action_starts (
    id          BIGSERIAL PRIMARY KEY,
    action      TEXT        NOT NULL,
    target      TEXT        NOT NULL,
    incident_id BIGINT      NOT NULL REFERENCES incidents (id),
    step_id     BIGINT      NOT NULL REFERENCES plan_steps (id),
    started_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX action_starts_action_time ON action_starts (action, started_at);
CREATE INDEX action_starts_incident ON action_starts (incident_id, action);

CREATE TABLE installation (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint_key TEXT    NOT NULL
);
