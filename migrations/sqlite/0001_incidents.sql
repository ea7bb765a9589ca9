-- Incidents: one row per alert occurrence (fingerprint + startsAt), the unit of work.
-- Times are RFC 3339 text with microseconds and a Z suffix, so text order is time order.
CREATE TABLE incidents (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint      TEXT    NOT NULL,
    alertname        TEXT    NOT NULL,
    starts_at        TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'open',
    severity         TEXT    NOT NULL,
    labels           TEXT    NOT NULL,
    annotations      TEXT    NOT NULL,
    generator_url    TEXT    NOT NULL DEFAULT '',
    opened_at        TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL,
    resolved_at      TEXT,
    last_seen_at     TEXT    NOT NULL,
    renotified_count INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT incidents_alert_key UNIQUE (fingerprint, starts_at)
);
CREATE INDEX incidents_status_id ON incidents (status, id DESC);
CREATE INDEX incidents_opened_at ON incidents (opened_at);

CREATE TABLE incident_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at          TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    detail      TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

CREATE TRIGGER incident_events_no_update BEFORE UPDATE ON incident_events
BEGIN
    SELECT RAISE(ABORT, 'incident_events is append-only');
END;
CREATE TRIGGER incident_events_no_delete BEFORE DELETE ON incident_events
BEGIN
    SELECT RAISE(ABORT, 'incident_events is append-only');
END;
