//! The embedded SQLite store: the default on a bare machine, one process at a time. Writes go
//! through one writer connection, reads through a few readers (see `sqlite_pools`).
//!
//! Times are stored as fixed-width RFC 3339 text (microseconds, `Z`), so that comparing text
//! compares times and the `(fingerprint, starts_at)` constraint sees equal times as equal.

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{QueryBuilder, Row};

use super::sqlite_pools::{self, Writer};

use super::{
    classify, corrupt, diagnosed_event, parse_status, probe_event, push_filter, IncidentFilter,
    Opened, Renotified, Resolution, StoreError, StoreOptions, INCIDENT_COLUMNS,
};
use crate::domain::diagnosis::Diagnosis;
use crate::domain::finding::Finding;
use crate::domain::incident::IncidentStatus;
use crate::domain::incident::{Incident, NewIncident, TimelineEvent};
use crate::domain::plan::{PlannedStep, Step, StepState, Transition};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Incidents in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The writer. Named `pool` because the queries shared with PostgreSQL use `self.pool`: they
    /// all run on the writer, reads included (their reads mostly precede a write).
    pool: Writer,
    /// The readers, for this module's read-only queries (the API, the engine's look-ups).
    read: SqlitePool,
}

/// The stored form of a time.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time {s:?}: {e}")))
}

fn json(s: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("JSON column: {e}")))
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database file at `path`.
    pub async fn open(path: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| classify(sqlx::Error::Io(e)))?;
        }
        let (pool, read) = sqlite_pools::open(path, opts).await?;
        Ok(Self { pool, read })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(self.pool.pool()).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn open_incident(&self, new: &NewIncident) -> Result<Opened, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let opened = open_in(&mut tx, new).await?;
        tx.commit().await.map_err(classify)?;
        Ok(opened)
    }

    /// Several alerts' incidents in one transaction (group commit).
    pub(super) async fn open_incidents(
        &self,
        news: &[&NewIncident],
    ) -> Result<Vec<Opened>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            out.push(open_in(&mut tx, new).await?);
        }
        tx.commit().await.map_err(classify)?;
        Ok(out)
    }

    pub(super) async fn resolve_by_alert(
        &self,
        fingerprint: &str,
        starts_at: DateTime<Utc>,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<Resolution, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let now = ts(Utc::now());
        let updated: Option<i64> = sqlx::query_scalar(
            "UPDATE incidents SET status = CASE WHEN status = 'remediated' THEN status ELSE 'resolved' END, \
             resolved_at = ?3, updated_at = ?4 \
             WHERE fingerprint = ?1 AND starts_at = ?2 AND resolved_at IS NULL RETURNING id",
        )
        .bind(fingerprint)
        .bind(ts(starts_at))
        .bind(ts(at))
        .bind(&now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let outcome = match updated {
            Some(id) => {
                sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?1, ?2, 'resolved', ?3)")
                    .bind(id)
                    .bind(&now)
                    .bind(detail.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                Resolution::Resolved(id)
            }
            None => sqlx::query_scalar(
                "SELECT id FROM incidents WHERE fingerprint = ?1 AND starts_at = ?2",
            )
            .bind(fingerprint)
            .bind(ts(starts_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?
            .map_or(Resolution::Unknown, Resolution::AlreadyResolved),
        };
        tx.commit().await.map_err(classify)?;
        Ok(outcome)
    }

    pub(super) async fn record_renotifications(
        &self,
        batch: &[Renotified],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for r in batch {
            sqlx::query(
                "UPDATE incidents SET renotified_count = renotified_count + ?2, \
                 last_seen_at = MAX(last_seen_at, ?3) WHERE id = ?1",
            )
            .bind(r.incident_id)
            .bind(r.count)
            .bind(ts(r.last_seen_at))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    pub(super) async fn get_incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(classify)?;
        row.map(|r| incident(&r)).transpose()
    }

    pub(super) async fn timeline(&self, id: i64) -> Result<Vec<TimelineEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, detail FROM incident_events WHERE incident_id = ?1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(TimelineEvent {
                    id: r.try_get("id").map_err(classify)?,
                    at: parse_ts(r.try_get("at").map_err(classify)?)?,
                    kind: r.try_get("kind").map_err(classify)?,
                    detail: json(r.try_get("detail").map_err(classify)?)?,
                })
            })
            .collect()
    }

    pub(super) async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<Incident>, StoreError> {
        let mut qb = QueryBuilder::new(format!("SELECT {INCIDENT_COLUMNS} FROM incidents"));
        push_filter(&mut qb, filter, ts);
        let rows = qb.build().fetch_all(&self.read).await.map_err(classify)?;
        rows.iter().map(incident).collect()
    }

    pub(super) async fn append_event(
        &self,
        incident_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4) RETURNING id")
            .bind(incident_id)
            .bind(ts(at))
            .bind(kind)
            .bind(detail.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    pub(super) async fn save_diagnosis(
        &self,
        incident_id: i64,
        findings: &[Finding],
        d: &Diagnosis,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let detail = serde_json::to_string(d).map_err(|e| corrupt("diagnosis", e))?;
        let inserted = sqlx::query(
            "INSERT INTO diagnoses (incident_id, scenario, confidence, summary, detail, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (incident_id) DO NOTHING",
        )
        .bind(incident_id)
        .bind(d.scenario.as_str())
        .bind(d.confidence)
        .bind(&d.summary)
        .bind(detail)
        .bind(ts(at))
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        for f in findings {
            sqlx::query(
                "INSERT INTO findings (incident_id, probe, status, summary, evidence, signals, started_at, duration_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(incident_id)
            .bind(&f.probe)
            .bind(f.status.as_str())
            .bind(&f.summary)
            .bind(f.evidence.to_string())
            .bind(serde_json::to_string(&f.signals).map_err(|e| corrupt("signals", e))?)
            .bind(ts(f.started_at))
            .bind(i64::try_from(f.duration_ms).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            let (at, detail) = probe_event(f);
            sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?1, ?2, 'probe_finished', ?3)")
                .bind(incident_id)
                .bind(ts(at))
                .bind(detail.to_string())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?1, ?2, 'diagnosed', ?3)")
            .bind(incident_id)
            .bind(ts(at))
            .bind(diagnosed_event(d).to_string())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }

    pub(super) async fn findings(&self, incident_id: i64) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(
            "SELECT probe, status, summary, evidence, signals, started_at, duration_ms FROM findings \
             WHERE incident_id = ?1 ORDER BY id",
        )
        .bind(incident_id)
        .fetch_all(&self.read)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status").map_err(classify)?;
                let signals: String = r.try_get("signals").map_err(classify)?;
                Ok(Finding {
                    probe: r.try_get("probe").map_err(classify)?,
                    status: serde_json::from_value(serde_json::Value::String(status))
                        .map_err(|e| corrupt("finding status", e))?,
                    summary: r.try_get("summary").map_err(classify)?,
                    evidence: json(r.try_get("evidence").map_err(classify)?)?,
                    signals: serde_json::from_str(&signals)
                        .map_err(|e| corrupt("finding signals", e))?,
                    started_at: parse_ts(r.try_get("started_at").map_err(classify)?)?,
                    duration_ms: u64::try_from(
                        r.try_get::<i64, _>("duration_ms").map_err(classify)?,
                    )
                    .unwrap_or(0),
                })
            })
            .collect()
    }

    pub(super) async fn diagnosis(
        &self,
        incident_id: i64,
    ) -> Result<Option<Diagnosis>, StoreError> {
        let detail: Option<String> =
            sqlx::query_scalar("SELECT detail FROM diagnoses WHERE incident_id = ?1")
                .bind(incident_id)
                .fetch_optional(&self.read)
                .await
                .map_err(classify)?;
        detail
            .map(|d| serde_json::from_str(&d).map_err(|e| corrupt("diagnosis", e)))
            .transpose()
    }

    pub(super) async fn undiagnosed(&self, limit: i64) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM incidents i WHERE status = 'open' \
             AND NOT EXISTS (SELECT 1 FROM diagnoses d WHERE d.incident_id = i.id) ORDER BY id LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(classify)
    }

    pub(super) async fn close(&self) {
        self.read.close().await;
        self.pool.pool().close().await;
    }
}

fn incident(r: &SqliteRow) -> Result<Incident, StoreError> {
    let resolved: Option<String> = r.try_get("resolved_at").map_err(classify)?;
    Ok(Incident {
        id: r.try_get("id").map_err(classify)?,
        status: parse_status(r.try_get("status").map_err(classify)?)?,
        alertname: r.try_get("alertname").map_err(classify)?,
        fingerprint: r.try_get("fingerprint").map_err(classify)?,
        severity: r.try_get("severity").map_err(classify)?,
        labels: json(r.try_get("labels").map_err(classify)?)?,
        annotations: json(r.try_get("annotations").map_err(classify)?)?,
        generator_url: r.try_get("generator_url").map_err(classify)?,
        starts_at: parse_ts(r.try_get("starts_at").map_err(classify)?)?,
        opened_at: parse_ts(r.try_get("opened_at").map_err(classify)?)?,
        updated_at: parse_ts(r.try_get("updated_at").map_err(classify)?)?,
        resolved_at: resolved.as_deref().map(parse_ts).transpose()?,
        last_seen_at: parse_ts(r.try_get("last_seen_at").map_err(classify)?)?,
        renotified_count: r.try_get("renotified_count").map_err(classify)?,
    })
}

// ---- Remediation: plans, claims, target locks (queries shared with PostgreSQL) ----

fn t(x: DateTime<Utc>) -> String {
    ts(x)
}

fn j(v: &serde_json::Value) -> String {
    v.to_string()
}

fn get_t(r: &SqliteRow, c: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_ts(r.try_get(c).map_err(classify)?)
}

fn get_ot(r: &SqliteRow, c: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    r.try_get::<Option<&str>, _>(c)
        .map_err(classify)?
        .map(parse_ts)
        .transpose()
}

fn step_row(r: &SqliteRow) -> Result<Step, StoreError> {
    super::step_from(
        |c| r.try_get::<i64, _>(c).map_err(classify),
        |c| r.try_get::<i32, _>(c).map_err(classify),
        |c| r.try_get::<Option<String>, _>(c).map_err(classify),
        |c| get_ot(r, c),
        json(r.try_get("output").map_err(classify)?)?,
    )
}

/// Opens one alert's incident inside the writer's transaction `tx`.
async fn open_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    new: &NewIncident,
) -> Result<Opened, StoreError> {
    let opened_at = ts(new.opened_at);
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, \
         annotations, generator_url, opened_at, updated_at, last_seen_at) \
         VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7, ?8, ?8, ?8) \
         ON CONFLICT (fingerprint, starts_at) DO NOTHING RETURNING id",
    )
    .bind(&new.fingerprint)
    .bind(&new.alertname)
    .bind(ts(new.starts_at))
    .bind(&new.severity)
    .bind(new.labels.to_string())
    .bind(new.annotations.to_string())
    .bind(&new.generator_url)
    .bind(&opened_at)
    .fetch_optional(&mut **tx)
    .await
    .map_err(classify)?;
    let opened = match created {
        Some(id) => {
            sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?1, ?2, 'opened', ?3)")
                .bind(id)
                .bind(&opened_at)
                .bind(new.detail.to_string())
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Opened::Created(id)
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "SELECT id FROM incidents WHERE fingerprint = ?1 AND starts_at = ?2",
            )
            .bind(&new.fingerprint)
            .bind(ts(new.starts_at))
            .fetch_one(&mut **tx)
            .await
            .map_err(classify)?;
            Opened::Existing(id)
        }
    };
    Ok(opened)
}

type This = SqliteStore;
include!("plan_queries.rs");

// ---- The action gate (queries shared with PostgreSQL; time from SQLite's clock, in the
// stored fixed-width form) ----

type Db = sqlx::Sqlite;
const DB_NOW: &str = "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')";
/// A write as the first statement takes SQLite's write lock at once: gate transactions run one
/// at a time instead of failing to upgrade a read lock.
const GATE_SERIALIZE: &str = "DELETE FROM action_starts WHERE id < 0";

/// The database's now plus or minus the number of seconds bound to `$param`.
fn db_shift(param: usize, sign: char) -> String {
    format!("(strftime('%Y-%m-%dT%H:%M:%f', 'now', '{sign}' || ${param} || ' seconds') || '000Z')")
}

include!("gate_queries.rs");

// ---- Restore tests and manual backups (queries shared with PostgreSQL) ----

type DbRow = SqliteRow;

fn col_json(r: &SqliteRow, c: &str) -> Result<serde_json::Value, StoreError> {
    json(r.try_get(c).map_err(classify)?)
}

use crate::domain::manual_backup::{BackupStatus, ManualBackup, NewManualBackup};
use crate::domain::restore_test::{NewRestoreTest, RestoreTest, TestResult, TestStatus};

include!("runbook_queries.rs");
use super::{Attempt, Delivery, DeliveryRecord, NewDelivery, NotifyState};
include!("notify_queries.rs");
include!("watchdog_queries.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_sort_as_text_in_time_order() {
        let a = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.9Z")
            .unwrap()
            .with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2026-01-01T00:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(ts(a) < ts(b), "{} < {}", ts(a), ts(b));
        assert_eq!(parse_ts(&ts(a)).unwrap(), a);
    }
}
