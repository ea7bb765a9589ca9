//! The runbook's records: restore tests (with their checks) and manual backups. The SQL is the
//! same on both backends.

use chrono::{DateTime, Utc};

use super::codec::Json;
use super::query::{Row, Tx};
use super::{corrupt, Store, StoreError};
use crate::domain::manual_backup::{
    BackupStatus, ManualBackup, NewManualBackup, StartOutcome, StartRules,
};
use crate::domain::restore_test::{
    CheckResult, NewRestoreTest, RestoreStart, RestoreTest, RtoResult, TestResult, TestStatus,
};

const RESTORE_TEST_COLUMNS: &str = "id, database, object_key, trigger, actor, status, reason, \
    started_at, finished_at, duration_ms, object_bytes, archive_bytes, tables_expected, \
    tables_restored, table_data_expected, rows_restored, scratch_database, incident_id, detail, \
    restore_ms, rto_minutes, target";

const CHECK_COLUMNS: &str = "restore_test_id, name, sql, passed, value, reason, duration_ms";

const MANUAL_BACKUP_COLUMNS: &str = "id, job_name, namespace, databases, storage_class, trigger, \
    actor, status, reason, started_at, finished_at, object_keys, detail";

fn restore_test_row(r: &Row) -> Result<RestoreTest, StoreError> {
    let int = |c: &str| r.get::<Option<i64>>(c);
    let status: String = r.get("status")?;
    Ok(RestoreTest {
        id: r.get("id")?,
        database: r.get("database")?,
        target: r.get("target")?,
        trigger: r.get("trigger")?,
        actor: r.get("actor")?,
        started_at: r.get("started_at")?,
        scratch_database: r.get("scratch_database")?,
        incident_id: int("incident_id")?,
        result: TestResult {
            status: status.parse::<TestStatus>()?,
            reason: r.get("reason")?,
            object_key: r.get("object_key")?,
            finished_at: r.get("finished_at")?,
            duration_ms: int("duration_ms")?,
            object_bytes: int("object_bytes")?,
            archive_bytes: int("archive_bytes")?,
            tables_expected: int("tables_expected")?,
            tables_restored: int("tables_restored")?,
            table_data_expected: int("table_data_expected")?,
            rows_restored: int("rows_restored")?,
            // Filled in by `with_checks`.
            checks: Vec::new(),
            rto: match (r.get::<Option<f64>>("rto_minutes")?, int("restore_ms")?) {
                (Some(m), Some(ms)) => Some(RtoResult::new(m, ms)),
                _ => None,
            },
            detail: r.get("detail")?,
        },
    })
}

fn check_row(r: &Row) -> Result<(i64, CheckResult), StoreError> {
    Ok((
        r.get("restore_test_id")?,
        CheckResult {
            name: r.get("name")?,
            sql: r.get("sql")?,
            passed: r.get("passed")?,
            value: r.get("value")?,
            reason: r.get("reason")?,
            duration_ms: r.get("duration_ms")?,
        },
    ))
}

fn manual_backup_row(r: &Row) -> Result<ManualBackup, StoreError> {
    let list = |c: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_value(r.get(c)?).map_err(|e| corrupt(c, e))
    };
    let status: String = r.get("status")?;
    Ok(ManualBackup {
        id: r.get("id")?,
        job_name: r.get("job_name")?,
        namespace: r.get("namespace")?,
        databases: list("databases")?,
        storage_class: r.get("storage_class")?,
        trigger: r.get("trigger")?,
        actor: r.get("actor")?,
        status: status.parse::<BackupStatus>()?,
        reason: r.get("reason")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        object_keys: list("object_keys")?,
        detail: r.get("detail")?,
    })
}

impl Store {
    /// When each target's newest restore test started (targets never tested are absent): the
    /// schedule tests the targets whose last test is oldest first.
    pub async fn last_restore_test_by_target(
        &self,
    ) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>, StoreError> {
        let rows = self
            .reader()
            .query(
                "SELECT target, MAX(started_at) AS last FROM restore_tests \
                 WHERE target IS NOT NULL GROUP BY target",
            )
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| Ok((r.get::<String>("target")?, r.get::<DateTime<Utc>>("last")?)))
            .collect()
    }

    /// Records running restore tests for `news` in one transaction serialized with the action
    /// gate's, unless a test is running already (started within the last `running_seconds`):
    /// one restore test run per target at a time. A test whose (slot, database) another
    /// replica took is left out.
    pub async fn begin_restore_tests(
        &self,
        news: &[NewRestoreTest],
        running_seconds: i64,
    ) -> Result<RestoreStart, StoreError> {
        let mut tx = self.begin().await?;
        let db = tx.dialect();
        tx.query(db.gate_serialize()).execute().await?;
        // A schedule period another replica took is not a conflict: there is nothing to do.
        if let Some(slot) = news.iter().find_map(|n| n.slot.as_deref()) {
            let taken: i64 = tx
                .query("SELECT COUNT(*) FROM restore_tests WHERE slot = $1")
                .bind(slot)
                .fetch_scalar()
                .await?;
            if taken > 0 {
                return Ok(RestoreStart::Started(Vec::new()));
            }
        }
        // Per target: another target's test does not hold this one back.
        let target = news.iter().find_map(|n| n.target.clone());
        let sql = format!(
            "SELECT id, database FROM restore_tests WHERE status = 'running' \
             AND started_at > {since} AND target = $2 ORDER BY id LIMIT 1",
            since = db.shift(1, '-'),
        );
        if let Some(r) = tx
            .query(&sql)
            .bind(running_seconds)
            .bind(target.as_deref())
            .fetch_optional()
            .await?
        {
            return Ok(RestoreStart::Busy {
                id: r.get("id")?,
                database: r.get("database")?,
            });
        }
        let mut ids = Vec::new();
        for new in news {
            let id: Option<i64> = tx
                .query(
                    "INSERT INTO restore_tests (database, object_key, trigger, actor, slot, \
                     status, started_at, scratch_database, target) \
                     VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .bind(&new.database)
                .bind(&new.object_key)
                .bind(&new.trigger)
                .bind(&new.actor)
                .bind(&new.slot)
                .bind(new.started_at)
                .bind(&new.scratch_database)
                .bind(&new.target)
                .fetch_optional_scalar()
                .await?;
            ids.extend(id);
        }
        tx.commit().await?;
        Ok(RestoreStart::Started(ids))
    }

    /// Stores how a restore test ended, with its checks, in one transaction.
    pub async fn finish_restore_test(&self, id: i64, o: &TestResult) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.query(
        "UPDATE restore_tests SET status = $1, reason = $2, object_key = COALESCE($3, object_key), \
         finished_at = $4, duration_ms = $5, object_bytes = $6, archive_bytes = $7, \
         tables_expected = $8, tables_restored = $9, table_data_expected = $10, \
         rows_restored = $11, detail = $12, restore_ms = $13, rto_minutes = $14 WHERE id = $15",
    )
    .bind(o.status.as_str())
    .bind(&o.reason)
    .bind(&o.object_key)
    .bind(o.finished_at)
    .bind(o.duration_ms)
    .bind(o.object_bytes)
    .bind(o.archive_bytes)
    .bind(o.tables_expected)
    .bind(o.tables_restored)
    .bind(o.table_data_expected)
    .bind(o.rows_restored)
    .bind(Json(&o.detail))
    .bind(o.rto.as_ref().map(|r| r.restore_ms))
    .bind(o.rto.as_ref().map(|r| r.rto_minutes))
    .bind(id)
    .execute()
    .await?;
        for (position, c) in o.checks.iter().enumerate() {
            tx.query(
                "INSERT INTO restore_test_checks (restore_test_id, position, name, sql, passed, \
             value, reason, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(i32::try_from(position).unwrap_or(i32::MAX))
            .bind(&c.name)
            .bind(&c.sql)
            .bind(c.passed)
            .bind(&c.value)
            .bind(&c.reason)
            .bind(c.duration_ms)
            .execute()
            .await?;
        }
        tx.commit().await
    }

    /// Attaches each test's stored checks (one query for the page).
    async fn with_checks(
        &self,
        mut tests: Vec<RestoreTest>,
    ) -> Result<Vec<RestoreTest>, StoreError> {
        let (Some(lo), Some(hi)) = (
            tests.iter().map(|t| t.id).min(),
            tests.iter().map(|t| t.id).max(),
        ) else {
            return Ok(tests);
        };
        let sql = format!(
            "SELECT {CHECK_COLUMNS} FROM restore_test_checks \
         WHERE restore_test_id >= $1 AND restore_test_id <= $2 ORDER BY restore_test_id, position"
        );
        let rows = self
            .writer()
            .query(&sql)
            .bind(lo)
            .bind(hi)
            .fetch_all()
            .await?;
        for row in &rows {
            let (test_id, check) = check_row(row)?;
            if let Some(t) = tests.iter_mut().find(|t| t.id == test_id) {
                t.result.checks.push(check);
            }
        }
        Ok(tests)
    }

    /// Links a failed restore test to the incident it opened.
    pub async fn set_restore_test_incident(
        &self,
        id: i64,
        incident_id: i64,
    ) -> Result<(), StoreError> {
        self.writer()
            .query("UPDATE restore_tests SET incident_id = $1 WHERE id = $2")
            .bind(incident_id)
            .bind(id)
            .execute()
            .await?;
        Ok(())
    }

    pub async fn get_restore_test(&self, id: i64) -> Result<Option<RestoreTest>, StoreError> {
        let test = self
            .row_by_id("restore_tests", RESTORE_TEST_COLUMNS, id, restore_test_row)
            .await?;
        Ok(self.with_checks(test.into_iter().collect()).await?.pop())
    }

    /// Restore tests newest first, below `before_id` when given.
    pub async fn list_restore_tests(
        &self,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<RestoreTest>, StoreError> {
        let tests = self
            .rows_before(
                "restore_tests",
                RESTORE_TEST_COLUMNS,
                before_id,
                limit,
                restore_test_row,
            )
            .await?;
        self.with_checks(tests).await
    }

    /// The row of `table` with `id`, read by `read`.
    async fn row_by_id<T>(
        &self,
        table: &str,
        columns: &str,
        id: i64,
        read: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!("SELECT {columns} FROM {table} WHERE id = $1");
        let row = self.writer().query(&sql).bind(id).fetch_optional().await?;
        row.as_ref().map(read).transpose()
    }

    /// Up to `limit` rows of `table`, newest first, below `before_id` when given.
    async fn rows_before<T>(
        &self,
        table: &str,
        columns: &str,
        before_id: Option<i64>,
        limit: i64,
        read: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!("SELECT {columns} FROM {table} WHERE id < $1 ORDER BY id DESC LIMIT $2");
        let rows = self
            .writer()
            .query(&sql)
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all()
            .await?;
        rows.iter().map(read).collect()
    }

    /// Marks tests still `running` since before `older_than` as interrupted; returns their scratch
    /// databases (to be dropped).
    pub async fn interrupt_stale_restore_tests(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        self.writer()
            .query(
                "UPDATE restore_tests SET status = 'error', finished_at = $1, \
         reason = 'interrupted: the service stopped while the test ran' \
         WHERE status = 'running' AND started_at < $2 RETURNING scratch_database",
            )
            .bind(now)
            .bind(older_than)
            .fetch_all_scalar()
            .await
    }

    /// The manual backup started by a request with idempotency key `key` within the last
    /// `seconds`, if any.
    pub async fn manual_backup_by_key(
        &self,
        key: &str,
        seconds: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin().await?;
        by_key(&mut tx, key, seconds).await
    }

    /// Records a manual backup about to be launched, if `rules` allow it, in one transaction
    /// serialized with the action gate's (so two replicas never both see the target free or
    /// room in the budget): a repeated idempotency key answers the first backup; a running
    /// manual backup of the namespace, or a used-up budget, refuses it.
    pub async fn begin_manual_backup(
        &self,
        new: &NewManualBackup,
        rules: &StartRules<'_>,
    ) -> Result<StartOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let db = tx.dialect();
        tx.query(db.gate_serialize()).execute().await?;
        if let Some(key) = rules.idempotency_key {
            if let Some(id) = by_key(&mut tx, key, rules.key_seconds).await? {
                return Ok(StartOutcome::Replayed(id));
            }
        }
        let sql = format!(
            "SELECT id, job_name FROM manual_backups WHERE status = 'running' AND namespace = $1 \
             AND started_at > {since} ORDER BY id LIMIT 1",
            since = db.shift(2, '-'),
        );
        let running = tx
            .query(&sql)
            .bind(&new.namespace)
            .bind(rules.running_seconds)
            .fetch_optional()
            .await?;
        if let Some(r) = running {
            return Ok(StartOutcome::Busy {
                id: r.get("id")?,
                job_name: r.get("job_name")?,
            });
        }
        let (max, window) = rules.budget;
        // The budget is the target's (its namespace's): one target cannot spend another's.
        let sql = format!(
            "SELECT COUNT(*) FROM manual_backups WHERE started_at > {since} AND namespace = $2",
            since = db.shift(1, '-'),
        );
        let used: i64 = tx
            .query(&sql)
            .bind(window)
            .bind(&new.namespace)
            .fetch_scalar()
            .await?;
        if used >= max {
            return Ok(StartOutcome::OverBudget { used });
        }
        let dbs = serde_json::json!(new.databases);
        let keys = serde_json::json!(new.object_keys);
        let id: i64 = tx
            .query(
                "INSERT INTO manual_backups (job_name, namespace, databases, storage_class, trigger, \
                 actor, status, started_at, object_keys, detail, idempotency_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9, $10) RETURNING id",
            )
            .bind(&new.job_name)
            .bind(&new.namespace)
            .bind(Json(&dbs))
            .bind(&new.storage_class)
            .bind(&new.trigger)
            .bind(&new.actor)
            .bind(new.started_at)
            .bind(Json(&keys))
            .bind(Json(&new.detail))
            .bind(rules.idempotency_key)
            .fetch_scalar()
            .await?;
        tx.commit().await?;
        Ok(StartOutcome::Started(id))
    }

    /// Stores how a manual backup ended.
    pub async fn finish_manual_backup(
        &self,
        id: i64,
        status: BackupStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
        object_keys: &[String],
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let keys = serde_json::json!(object_keys);
        self.writer().query(
        "UPDATE manual_backups SET status = $1, reason = $2, finished_at = $3, object_keys = $4, \
         detail = $5 WHERE id = $6",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(at)
    .bind(Json(&keys))
    .bind(Json(detail))
    .bind(id)
    .execute()
    .await?;
        Ok(())
    }

    pub async fn get_manual_backup(&self, id: i64) -> Result<Option<ManualBackup>, StoreError> {
        self.row_by_id(
            "manual_backups",
            MANUAL_BACKUP_COLUMNS,
            id,
            manual_backup_row,
        )
        .await
    }

    /// Manual backups newest first, below `before_id` when given.
    pub async fn list_manual_backups(
        &self,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ManualBackup>, StoreError> {
        self.rows_before(
            "manual_backups",
            MANUAL_BACKUP_COLUMNS,
            before_id,
            limit,
            manual_backup_row,
        )
        .await
    }
}

/// The newest manual backup of idempotency key `key` within the last `seconds` (database clock).
async fn by_key(tx: &mut Tx, key: &str, seconds: i64) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "SELECT id FROM manual_backups WHERE idempotency_key = $1 AND started_at > {since} \
         ORDER BY id DESC LIMIT 1",
        since = tx.dialect().shift(2, '-'),
    );
    tx.query(&sql)
        .bind(key)
        .bind(seconds)
        .fetch_optional_scalar()
        .await
}
