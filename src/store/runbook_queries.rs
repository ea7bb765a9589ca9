// Restore tests and manual backups, shared verbatim by the PostgreSQL and SQLite stores
// (included into each module, like plan_queries.rs). The SQL is the common subset of both
// dialects; placeholders are numbered and first appear in ascending order. Each store module
// supplies `t` / `j` (bind a time / JSON value), `get_t` / `get_ot` / `col_json` (read them back),
// `DbRow` (its row type) and `This` (the store type).

const RESTORE_TEST_COLUMNS: &str = "id, database, object_key, trigger, actor, status, reason, \
    started_at, finished_at, duration_ms, object_bytes, archive_bytes, tables_expected, \
    tables_restored, table_data_expected, rows_restored, scratch_database, incident_id, detail, \
    restore_ms, rto_minutes";

const CHECK_COLUMNS: &str = "restore_test_id, name, sql, passed, value, reason, duration_ms";

const MANUAL_BACKUP_COLUMNS: &str = "id, job_name, namespace, databases, storage_class, trigger, \
    actor, status, reason, started_at, finished_at, object_keys, detail";

fn restore_test_row(r: &DbRow) -> Result<RestoreTest, StoreError> {
    let int = |c: &str| r.try_get::<Option<i64>, _>(c).map_err(classify);
    let status: String = r.try_get("status").map_err(classify)?;
    Ok(RestoreTest {
        id: r.try_get("id").map_err(classify)?,
        database: r.try_get("database").map_err(classify)?,
        trigger: r.try_get("trigger").map_err(classify)?,
        actor: r.try_get("actor").map_err(classify)?,
        started_at: get_t(r, "started_at")?,
        scratch_database: r.try_get("scratch_database").map_err(classify)?,
        incident_id: int("incident_id")?,
        result: TestResult {
            status: TestStatus::parse(&status).map_err(StoreError::Corrupt)?,
            reason: r.try_get("reason").map_err(classify)?,
            object_key: r.try_get("object_key").map_err(classify)?,
            finished_at: get_ot(r, "finished_at")?,
            duration_ms: int("duration_ms")?,
            object_bytes: int("object_bytes")?,
            archive_bytes: int("archive_bytes")?,
            tables_expected: int("tables_expected")?,
            tables_restored: int("tables_restored")?,
            table_data_expected: int("table_data_expected")?,
            rows_restored: int("rows_restored")?,
            // Filled in by `with_checks`.
            checks: Vec::new(),
            rto: match (
                r.try_get::<Option<f64>, _>("rto_minutes").map_err(classify)?,
                int("restore_ms")?,
            ) {
                (Some(m), Some(ms)) => Some(crate::domain::restore_test::RtoResult::new(m, ms)),
                _ => None,
            },
            detail: col_json(r, "detail")?,
        },
    })
}

fn check_row(r: &DbRow) -> Result<(i64, crate::domain::restore_test::CheckResult), StoreError> {
    Ok((
        r.try_get("restore_test_id").map_err(classify)?,
        crate::domain::restore_test::CheckResult {
            name: r.try_get("name").map_err(classify)?,
            sql: r.try_get("sql").map_err(classify)?,
            passed: r.try_get("passed").map_err(classify)?,
            value: r.try_get("value").map_err(classify)?,
            reason: r.try_get("reason").map_err(classify)?,
            duration_ms: r.try_get("duration_ms").map_err(classify)?,
        },
    ))
}

fn manual_backup_row(r: &DbRow) -> Result<ManualBackup, StoreError> {
    let list = |c: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_value(col_json(r, c)?).map_err(|e| corrupt(c, e))
    };
    let status: String = r.try_get("status").map_err(classify)?;
    Ok(ManualBackup {
        id: r.try_get("id").map_err(classify)?,
        job_name: r.try_get("job_name").map_err(classify)?,
        namespace: r.try_get("namespace").map_err(classify)?,
        databases: list("databases")?,
        storage_class: r.try_get("storage_class").map_err(classify)?,
        trigger: r.try_get("trigger").map_err(classify)?,
        actor: r.try_get("actor").map_err(classify)?,
        status: BackupStatus::parse(&status).map_err(StoreError::Corrupt)?,
        reason: r.try_get("reason").map_err(classify)?,
        started_at: get_t(r, "started_at")?,
        finished_at: get_ot(r, "finished_at")?,
        object_keys: list("object_keys")?,
        detail: col_json(r, "detail")?,
    })
}

impl This {
/// Records a running restore test; `None` when its (slot, database) is taken already.
pub(super) async fn insert_restore_test(
    &self,
    new: &NewRestoreTest,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO restore_tests (database, object_key, trigger, actor, slot, status, \
         started_at, scratch_database) VALUES ($1, $2, $3, $4, $5, 'running', $6, $7) \
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(&new.database)
    .bind(&new.object_key)
    .bind(&new.trigger)
    .bind(&new.actor)
    .bind(&new.slot)
    .bind(t(new.started_at))
    .bind(&new.scratch_database)
    .fetch_optional(&self.pool)
    .await
    .map_err(classify)
}

/// Stores how a restore test ended, with its checks, in one transaction.
pub(super) async fn finish_restore_test(
    &self,
    id: i64,
    o: &TestResult,
) -> Result<(), StoreError> {
    let mut tx = self.pool.begin().await.map_err(classify)?;
    sqlx::query(
        "UPDATE restore_tests SET status = $1, reason = $2, object_key = COALESCE($3, object_key), \
         finished_at = $4, duration_ms = $5, object_bytes = $6, archive_bytes = $7, \
         tables_expected = $8, tables_restored = $9, table_data_expected = $10, \
         rows_restored = $11, detail = $12, restore_ms = $13, rto_minutes = $14 WHERE id = $15",
    )
    .bind(o.status.as_str())
    .bind(&o.reason)
    .bind(&o.object_key)
    .bind(o.finished_at.map(t))
    .bind(o.duration_ms)
    .bind(o.object_bytes)
    .bind(o.archive_bytes)
    .bind(o.tables_expected)
    .bind(o.tables_restored)
    .bind(o.table_data_expected)
    .bind(o.rows_restored)
    .bind(j(&o.detail))
    .bind(o.rto.as_ref().map(|r| r.restore_ms))
    .bind(o.rto.as_ref().map(|r| r.rto_minutes))
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    for (position, c) in o.checks.iter().enumerate() {
        sqlx::query(
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
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)
}

/// Attaches each test's stored checks (one query for the page).
async fn with_checks(&self, mut tests: Vec<RestoreTest>) -> Result<Vec<RestoreTest>, StoreError> {
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
    let rows = sqlx::query(&sql)
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
    for row in &rows {
        let (test_id, check) = check_row(row)?;
        if let Some(t) = tests.iter_mut().find(|t| t.id == test_id) {
            t.result.checks.push(check);
        }
    }
    Ok(tests)
}

/// Links a failed restore test to the incident it opened.
pub(super) async fn set_restore_test_incident(
    &self,
    id: i64,
    incident_id: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE restore_tests SET incident_id = $1 WHERE id = $2")
        .bind(incident_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
    Ok(())
}

pub(super) async fn get_restore_test(&self, id: i64) -> Result<Option<RestoreTest>, StoreError> {
    let test = self
        .row_by_id("restore_tests", RESTORE_TEST_COLUMNS, id, restore_test_row)
        .await?;
    Ok(self.with_checks(test.into_iter().collect()).await?.pop())
}

/// Restore tests newest first, below `before_id` when given.
pub(super) async fn list_restore_tests(
    &self,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<RestoreTest>, StoreError> {
    let tests = self
        .rows_before("restore_tests", RESTORE_TEST_COLUMNS, before_id, limit, restore_test_row)
        .await?;
    self.with_checks(tests).await
}

/// The row of `table` with `id`, read by `read`.
async fn row_by_id<T>(
    &self,
    table: &str,
    columns: &str,
    id: i64,
    read: fn(&DbRow) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let sql = format!("SELECT {columns} FROM {table} WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
    row.as_ref().map(read).transpose()
}

/// Up to `limit` rows of `table`, newest first, below `before_id` when given.
async fn rows_before<T>(
    &self,
    table: &str,
    columns: &str,
    before_id: Option<i64>,
    limit: i64,
    read: fn(&DbRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let sql = format!("SELECT {columns} FROM {table} WHERE id < $1 ORDER BY id DESC LIMIT $2");
    let rows = sqlx::query(&sql)
        .bind(before_id.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
    rows.iter().map(read).collect()
}

/// Marks tests still `running` since before `older_than` as interrupted; returns their scratch
/// databases (to be dropped).
pub(super) async fn interrupt_stale_restore_tests(
    &self,
    older_than: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "UPDATE restore_tests SET status = 'error', finished_at = $1, \
         reason = 'interrupted: the service stopped while the test ran' \
         WHERE status = 'running' AND started_at < $2 RETURNING scratch_database",
    )
    .bind(t(now))
    .bind(t(older_than))
    .fetch_all(&self.pool)
    .await
    .map_err(classify)
}

/// Records a launched manual backup.
pub(super) async fn insert_manual_backup(&self, new: &NewManualBackup) -> Result<i64, StoreError> {
    let dbs = serde_json::json!(new.databases);
    let keys = serde_json::json!(new.object_keys);
    sqlx::query_scalar(
        "INSERT INTO manual_backups (job_name, namespace, databases, storage_class, trigger, actor, \
         status, started_at, object_keys, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $8, $9) RETURNING id",
    )
    .bind(&new.job_name)
    .bind(&new.namespace)
    .bind(j(&dbs))
    .bind(&new.storage_class)
    .bind(&new.trigger)
    .bind(&new.actor)
    .bind(t(new.started_at))
    .bind(j(&keys))
    .bind(j(&new.detail))
    .fetch_one(&self.pool)
    .await
    .map_err(classify)
}

/// Stores how a manual backup ended.
pub(super) async fn finish_manual_backup(
    &self,
    id: i64,
    status: BackupStatus,
    reason: Option<&str>,
    at: DateTime<Utc>,
    object_keys: &[String],
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let keys = serde_json::json!(object_keys);
    sqlx::query(
        "UPDATE manual_backups SET status = $1, reason = $2, finished_at = $3, object_keys = $4, \
         detail = $5 WHERE id = $6",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(t(at))
    .bind(j(&keys))
    .bind(j(detail))
    .bind(id)
    .execute(&self.pool)
    .await
    .map_err(classify)?;
    Ok(())
}

pub(super) async fn get_manual_backup(&self, id: i64) -> Result<Option<ManualBackup>, StoreError> {
    self.row_by_id("manual_backups", MANUAL_BACKUP_COLUMNS, id, manual_backup_row)
        .await
}

/// Manual backups newest first, below `before_id` when given.
pub(super) async fn list_manual_backups(
    &self,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<ManualBackup>, StoreError> {
    self.rows_before("manual_backups", MANUAL_BACKUP_COLUMNS, before_id, limit, manual_backup_row)
        .await
}
}
