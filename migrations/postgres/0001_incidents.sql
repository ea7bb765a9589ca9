-- Incidents: one row per alert occurrence (fingerprint + startsAt), the unit of work.
CREATE TABLE incidents (
    id               BIGSERIAL PRIMARY KEY,
    fingerprint      TEXT        NOT NULL,
    alertname        TEXT        NOT NULL,
    starts_at        TIMESTAMPTZ NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'open',
    severity         TEXT        NOT NULL,
    labels           JSONB       NOT NULL,
    annotations      JSONB       NOT NULL,
    generator_url    TEXT        NOT NULL DEFAULT '',
    opened_at        TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    resolved_at      TIMESTAMPTZ,
    last_seen_at     TIMESTAMPTZ NOT NULL,
    renotified_count BIGINT      NOT NULL DEFAULT 0,
    -- De-duplication across posts and replicas rests on this constraint, not on a prior read.
    CONSTRAINT incidents_alert_key UNIQUE (fingerprint, starts_at)
);
CREATE INDEX incidents_status_id ON incidents (status, id DESC);
CREATE INDEX incidents_opened_at ON incidents (opened_at);

-- The timeline: append-only, written before the thing it records is acted on.
CREATE TABLE incident_events (
    id          BIGSERIAL PRIMARY KEY,
    incident_id BIGINT      NOT NULL REFERENCES incidents (id),
    at          TIMESTAMPTZ NOT NULL,
    kind        TEXT        NOT NULL,
    detail      JSONB       NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

CREATE FUNCTION incident_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'incident_events is append-only';
END;
$$;
CREATE TRIGGER incident_events_append_only
    BEFORE UPDATE OR DELETE ON incident_events
    FOR EACH ROW EXECUTE FUNCTION incident_events_append_only();
