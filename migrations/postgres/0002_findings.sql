-- What each probe found for an incident, and the diagnosis drawn from them.
CREATE TABLE findings (
    id          BIGSERIAL PRIMARY KEY,
    incident_id BIGINT      NOT NULL REFERENCES incidents (id),
    probe       TEXT        NOT NULL,
    status      TEXT        NOT NULL,
    summary     TEXT        NOT NULL,
    evidence    JSONB       NOT NULL,
    signals     JSONB       NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    duration_ms BIGINT      NOT NULL
);
CREATE INDEX findings_incident ON findings (incident_id, id);

CREATE TABLE diagnoses (
    incident_id BIGINT PRIMARY KEY REFERENCES incidents (id),
    scenario    TEXT        NOT NULL,
    confidence  DOUBLE PRECISION NOT NULL,
    summary     TEXT        NOT NULL,
    detail      JSONB       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
