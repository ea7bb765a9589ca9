-- The action gate: claim epoch (fencing token), every action start (cooldowns, attempt cap,
-- rolling budget), and the per-installation fingerprint key. Times are RFC 3339 text with
-- microseconds, as in 0001.
ALTER TABLE incidents ADD COLUMN claim_epoch INTEGER NOT NULL DEFAULT 0;

CREATE TABLE action_starts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    step_id     INTEGER NOT NULL REFERENCES plan_steps (id),
    started_at  TEXT    NOT NULL
);
CREATE INDEX action_starts_action_time ON action_starts (action, started_at);
CREATE INDEX action_starts_incident ON action_starts (incident_id, action);

CREATE TABLE installation (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint_key TEXT    NOT NULL
);
