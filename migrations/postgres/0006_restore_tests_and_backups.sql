-- The runbook's restore tests (one row per database tested) and manual backups (one row per Job).
CREATE TABLE restore_tests (
    id                  BIGSERIAL PRIMARY KEY,
    database            TEXT        NOT NULL,
    object_key          TEXT,
    trigger             TEXT        NOT NULL,
    actor               TEXT        NOT NULL,
    -- Scheduled runs carry their period, so that replicas run each period once per database.
    slot                TEXT,
    status              TEXT        NOT NULL DEFAULT 'running',
    reason              TEXT,
    started_at          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ,
    duration_ms         BIGINT,
    object_bytes        BIGINT,
    archive_bytes       BIGINT,
    tables_expected     BIGINT,
    tables_restored     BIGINT,
    table_data_expected BIGINT,
    rows_restored       BIGINT,
    scratch_database    TEXT        NOT NULL,
    incident_id         BIGINT REFERENCES incidents (id),
    detail              JSONB       NOT NULL DEFAULT '{}',
    CONSTRAINT restore_tests_slot UNIQUE (slot, database)
);
CREATE INDEX restore_tests_running ON restore_tests (started_at) WHERE status = 'running';

CREATE TABLE manual_backups (
    id            BIGSERIAL PRIMARY KEY,
    job_name      TEXT        NOT NULL UNIQUE,
    namespace     TEXT        NOT NULL,
    databases     JSONB       NOT NULL,
    storage_class TEXT        NOT NULL,
    trigger       TEXT        NOT NULL,
    actor         TEXT        NOT NULL,
    status        TEXT        NOT NULL DEFAULT 'running',
    reason        TEXT,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ,
    object_keys   JSONB       NOT NULL DEFAULT '[]',
    detail        JSONB       NOT NULL DEFAULT '{}'
);
