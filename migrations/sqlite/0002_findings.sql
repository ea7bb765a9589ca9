-- What each probe found for an incident, and the diagnosis drawn from them.
CREATE TABLE findings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    probe       TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    summary     TEXT    NOT NULL,
    evidence    TEXT    NOT NULL,
    signals     TEXT    NOT NULL,
    started_at  TEXT    NOT NULL,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX findings_incident ON findings (incident_id, id);

CREATE TABLE diagnoses (
    incident_id INTEGER PRIMARY KEY REFERENCES incidents (id),
    scenario    TEXT    NOT NULL,
    confidence  REAL    NOT NULL,
    summary     TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);
