-- The freshness watchdog: one row per period, inserted by the replica that checks it (the
-- primary key makes each period run once across replicas), with what it found. Times are
-- RFC 3339 text, as in 0001.
CREATE TABLE watchdog_periods (
    period      TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    findings    TEXT NOT NULL DEFAULT '[]'
);
