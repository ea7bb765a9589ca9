-- Restore tests prove the backup is current and fast enough: the outcome of each named check
-- (restore_test.checks) run on the restored data, and the restore phase against the RTO.
ALTER TABLE restore_tests ADD COLUMN restore_ms INTEGER;
ALTER TABLE restore_tests ADD COLUMN rto_minutes REAL;

CREATE TABLE restore_test_checks (
    restore_test_id INTEGER NOT NULL REFERENCES restore_tests (id) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    sql             TEXT    NOT NULL,
    passed          BOOLEAN NOT NULL,
    value           TEXT,
    reason          TEXT,
    duration_ms     INTEGER NOT NULL,
    PRIMARY KEY (restore_test_id, position)
);
