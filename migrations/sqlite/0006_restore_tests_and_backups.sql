-- The runbook's restore tests (one row per database tested) and manual backups (one row per Job).
-- Times are RFC 3339 text with microseconds and a Z suffix, as everywhere in this store.
CREATE TABLE restore_tests (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    database            TEXT    NOT NULL,
    object_key          TEXT,
    trigger             TEXT    NOT NULL,
    actor               TEXT    NOT NULL,
    slot                TEXT,
    status              TEXT    NOT NULL DEFAULT 'running',
    reason              TEXT,
    started_at          TEXT    NOT NULL,
    finished_at         TEXT,
    duration_ms         INTEGER,
    object_bytes        INTEGER,
    archive_bytes       INTEGER,
    tables_expected     INTEGER,
    tables_restored     INTEGER,
    table_data_expected INTEGER,
    rows_restored       INTEGER,
    scratch_database    TEXT    NOT NULL,
    incident_id         INTEGER REFERENCES incidents (id),
    detail              TEXT    NOT NULL DEFAULT '{}',
    CONSTRAINT restore_tests_slot UNIQUE (slot, database)
);
CREATE INDEX restore_tests_running ON restore_tests (started_at) WHERE status = 'running';

CREATE TABLE manual_backups (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_name      TEXT    NOT NULL UNIQUE,
    namespace     TEXT    NOT NULL,
    databases     TEXT    NOT NULL,
    storage_class TEXT    NOT NULL,
    trigger       TEXT    NOT NULL,
    actor         TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'running',
    reason        TEXT,
    started_at    TEXT    NOT NULL,
    finished_at   TEXT,
    object_keys   TEXT    NOT NULL DEFAULT '[]',
    detail        TEXT    NOT NULL DEFAULT '{}'
);
