-- The freshness watchdog: one row per period, inserted by the replica that checks it (the
-- primary key makes each period run once across replicas), with what it found.
CREATE TABLE watchdog_periods (
    period      TIMESTAMPTZ PRIMARY KEY,
    holder      TEXT        NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    findings    JSONB       NOT NULL DEFAULT '[]'
);
