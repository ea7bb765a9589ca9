//! The PostgreSQL store: production, and the one several replicas share.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row};

use super::{
    classify, corrupt, diagnosed_event, parse_status, probe_event, push_filter, IncidentFilter,
    Opened, Renotified, Resolution, StoreError, StoreOptions, INCIDENT_COLUMNS,
};
use crate::domain::diagnosis::Diagnosis;
use crate::domain::finding::Finding;
use crate::domain::incident::IncidentStatus;
use crate::domain::incident::{Incident, NewIncident, TimelineEvent};
use crate::domain::plan::{PlannedStep, Step, StepState, Transition};

/// Opens an incident with its `opened` event in one atomic statement; no row when the alert's
/// incident already exists. The load benchmark runs this same statement through pgbench.
pub const OPEN_INCIDENT: &str = "WITH i AS (\
     INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, \
     annotations, generator_url, opened_at, updated_at, last_seen_at) \
     VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $8, $8) \
     ON CONFLICT ON CONSTRAINT incidents_alert_key DO NOTHING RETURNING id) \
     INSERT INTO incident_events (incident_id, at, kind, detail) \
     SELECT id, $8, 'opened', $9 FROM i RETURNING incident_id";

/// [`OPEN_INCIDENT`] for a batch of alerts (group commit): one statement, so one round trip and
/// one commit for all of them. Returns, per input row in order, the new incident's id, or NULL
/// where the alert's incident already existed.
const OPEN_INCIDENTS: &str = "WITH input AS (\
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::timestamptz[], $9::text[]) WITH ORDINALITY \
     AS t(fingerprint, alertname, starts_at, severity, labels, annotations, generator_url, \
     opened_at, detail, n)), \
     i AS (INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, \
     annotations, generator_url, opened_at, updated_at, last_seen_at) \
     SELECT fingerprint, alertname, starts_at, 'open', severity, labels::jsonb, \
     annotations::jsonb, generator_url, opened_at, opened_at, opened_at FROM input ORDER BY n \
     ON CONFLICT ON CONSTRAINT incidents_alert_key DO NOTHING \
     RETURNING id, fingerprint, starts_at), \
     e AS (INSERT INTO incident_events (incident_id, at, kind, detail) \
     SELECT i.id, input.opened_at, 'opened', input.detail::jsonb FROM i JOIN input \
     ON input.fingerprint = i.fingerprint AND input.starts_at = i.starts_at ORDER BY input.n) \
     SELECT i.id FROM input LEFT JOIN i \
     ON input.fingerprint = i.fingerprint AND input.starts_at = i.starts_at ORDER BY input.n";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Incidents in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Url(e.to_string()))?;
        let connect = connect.application_name("backup-remediator");
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(classify)?;
        Ok(Self { pool })
    }

    /// Wraps an existing pool (tests, tools).
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn open_incident(&self, new: &NewIncident) -> Result<Opened, StoreError> {
        // One statement, so one round trip: the incident and its `opened` event are inserted
        // together or not at all (a statement is atomic), and a conflicting insert adds neither.
        let created: Option<i64> = sqlx::query_scalar(OPEN_INCIDENT)
            .bind(&new.fingerprint)
            .bind(&new.alertname)
            .bind(new.starts_at)
            .bind(&new.severity)
            .bind(Json(&new.labels))
            .bind(Json(&new.annotations))
            .bind(&new.generator_url)
            .bind(new.opened_at)
            .bind(Json(&new.detail))
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        match created {
            Some(id) => Ok(Opened::Created(id)),
            // Another request or replica inserted it; its row is committed (ON CONFLICT waited).
            None => self
                .incident_id(&new.fingerprint, new.starts_at)
                .await
                .map(Opened::Existing),
        }
    }

    /// Several alerts' incidents in one statement; the alerts must be distinct.
    pub(super) async fn open_incidents(
        &self,
        news: &[&NewIncident],
    ) -> Result<Vec<Opened>, StoreError> {
        let col = |f: fn(&NewIncident) -> String| news.iter().map(|n| f(n)).collect::<Vec<_>>();
        let time =
            |f: fn(&NewIncident) -> DateTime<Utc>| news.iter().map(|n| f(n)).collect::<Vec<_>>();
        let ids: Vec<Option<i64>> = sqlx::query_scalar(OPEN_INCIDENTS)
            .bind(col(|n| n.fingerprint.clone()))
            .bind(col(|n| n.alertname.clone()))
            .bind(time(|n| n.starts_at))
            .bind(col(|n| n.severity.clone()))
            .bind(col(|n| n.labels.to_string()))
            .bind(col(|n| n.annotations.to_string()))
            .bind(col(|n| n.generator_url.clone()))
            .bind(time(|n| n.opened_at))
            .bind(col(|n| n.detail.to_string()))
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        if ids.len() != news.len() {
            return Err(StoreError::Corrupt(format!(
                "the batch insert answered {} rows for {} alerts",
                ids.len(),
                news.len()
            )));
        }
        let mut out = Vec::with_capacity(news.len());
        for (new, id) in news.iter().zip(ids) {
            out.push(match id {
                Some(id) => Opened::Created(id),
                // Opened before (by another request or replica): its row is committed.
                None => Opened::Existing(self.incident_id(&new.fingerprint, new.starts_at).await?),
            });
        }
        Ok(out)
    }

    async fn incident_id(
        &self,
        fingerprint: &str,
        starts_at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT id FROM incidents WHERE fingerprint = $1 AND starts_at = $2")
            .bind(fingerprint)
            .bind(starts_at)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    pub(super) async fn resolve_by_alert(
        &self,
        fingerprint: &str,
        starts_at: DateTime<Utc>,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<Resolution, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let updated: Option<i64> = sqlx::query_scalar(
            // A remediated incident keeps that status (the alert clearing is the expected
            // consequence); every other one becomes resolved.
            "UPDATE incidents SET status = CASE WHEN status = 'remediated' THEN status ELSE 'resolved' END, \
             resolved_at = $3, updated_at = now() \
             WHERE fingerprint = $1 AND starts_at = $2 AND resolved_at IS NULL RETURNING id",
        )
        .bind(fingerprint)
        .bind(starts_at)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let outcome = match updated {
            Some(id) => {
                sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, now(), 'resolved', $2)")
                    .bind(id)
                    .bind(Json(detail))
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                Resolution::Resolved(id)
            }
            None => sqlx::query_scalar(
                "SELECT id FROM incidents WHERE fingerprint = $1 AND starts_at = $2",
            )
            .bind(fingerprint)
            .bind(starts_at)
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
        let ids: Vec<i64> = batch.iter().map(|r| r.incident_id).collect();
        let counts: Vec<i64> = batch.iter().map(|r| r.count).collect();
        let seen: Vec<DateTime<Utc>> = batch.iter().map(|r| r.last_seen_at).collect();
        sqlx::query(
            "UPDATE incidents AS i SET renotified_count = i.renotified_count + b.count, \
             last_seen_at = GREATEST(i.last_seen_at, b.seen) \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[]) AS b(id, count, seen) \
             WHERE i.id = b.id",
        )
        .bind(ids)
        .bind(counts)
        .bind(seen)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn get_incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.map(|r| incident(&r)).transpose()
    }

    pub(super) async fn timeline(&self, id: i64) -> Result<Vec<TimelineEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, detail FROM incident_events WHERE incident_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(TimelineEvent {
                    id: r.try_get("id").map_err(classify)?,
                    at: r.try_get("at").map_err(classify)?,
                    kind: r.try_get("kind").map_err(classify)?,
                    detail: r
                        .try_get::<Json<serde_json::Value>, _>("detail")
                        .map_err(classify)?
                        .0,
                })
            })
            .collect()
    }

    pub(super) async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<Incident>, StoreError> {
        let mut qb = QueryBuilder::new(format!("SELECT {INCIDENT_COLUMNS} FROM incidents"));
        push_filter(&mut qb, filter, |t| t);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(classify)?;
        rows.iter().map(incident).collect()
    }

    pub(super) async fn append_event(
        &self,
        incident_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(incident_id)
            .bind(at)
            .bind(kind)
            .bind(Json(detail))
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
        let inserted = sqlx::query(
            "INSERT INTO diagnoses (incident_id, scenario, confidence, summary, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (incident_id) DO NOTHING",
        )
        .bind(incident_id)
        .bind(d.scenario.as_str())
        .bind(d.confidence)
        .bind(&d.summary)
        .bind(Json(d))
        .bind(at)
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(incident_id)
            .bind(&f.probe)
            .bind(f.status.as_str())
            .bind(&f.summary)
            .bind(Json(&f.evidence))
            .bind(Json(&f.signals))
            .bind(f.started_at)
            .bind(i64::try_from(f.duration_ms).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            let (at, detail) = probe_event(f);
            sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, 'probe_finished', $3)")
                .bind(incident_id)
                .bind(at)
                .bind(Json(detail))
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, 'diagnosed', $3)")
            .bind(incident_id)
            .bind(at)
            .bind(Json(diagnosed_event(d)))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }

    pub(super) async fn findings(&self, incident_id: i64) -> Result<Vec<Finding>, StoreError> {
        let rows = sqlx::query(
            "SELECT probe, status, summary, evidence, signals, started_at, duration_ms FROM findings \
             WHERE incident_id = $1 ORDER BY id",
        )
        .bind(incident_id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get("status").map_err(classify)?;
                Ok(Finding {
                    probe: r.try_get("probe").map_err(classify)?,
                    status: serde_json::from_value(serde_json::Value::String(status))
                        .map_err(|e| corrupt("finding status", e))?,
                    summary: r.try_get("summary").map_err(classify)?,
                    evidence: r
                        .try_get::<Json<serde_json::Value>, _>("evidence")
                        .map_err(classify)?
                        .0,
                    signals: serde_json::from_value(
                        r.try_get::<Json<serde_json::Value>, _>("signals")
                            .map_err(classify)?
                            .0,
                    )
                    .map_err(|e| corrupt("finding signals", e))?,
                    started_at: r.try_get("started_at").map_err(classify)?,
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
        let detail: Option<Json<serde_json::Value>> =
            sqlx::query_scalar("SELECT detail FROM diagnoses WHERE incident_id = $1")
                .bind(incident_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        detail
            .map(|d| serde_json::from_value(d.0).map_err(|e| corrupt("diagnosis", e)))
            .transpose()
    }

    pub(super) async fn undiagnosed(&self, limit: i64) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM incidents i WHERE status = 'open' \
             AND NOT EXISTS (SELECT 1 FROM diagnoses d WHERE d.incident_id = i.id) ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

fn incident(r: &PgRow) -> Result<Incident, StoreError> {
    Ok(Incident {
        id: r.try_get("id").map_err(classify)?,
        status: parse_status(r.try_get("status").map_err(classify)?)?,
        alertname: r.try_get("alertname").map_err(classify)?,
        fingerprint: r.try_get("fingerprint").map_err(classify)?,
        severity: r.try_get("severity").map_err(classify)?,
        labels: r
            .try_get::<Json<serde_json::Value>, _>("labels")
            .map_err(classify)?
            .0,
        annotations: r
            .try_get::<Json<serde_json::Value>, _>("annotations")
            .map_err(classify)?
            .0,
        generator_url: r.try_get("generator_url").map_err(classify)?,
        starts_at: r.try_get("starts_at").map_err(classify)?,
        opened_at: r.try_get("opened_at").map_err(classify)?,
        updated_at: r.try_get("updated_at").map_err(classify)?,
        resolved_at: r.try_get("resolved_at").map_err(classify)?,
        last_seen_at: r.try_get("last_seen_at").map_err(classify)?,
        renotified_count: r.try_get("renotified_count").map_err(classify)?,
    })
}

// ---- Remediation: plans, claims, target locks (queries shared with SQLite) ----

fn t(x: DateTime<Utc>) -> DateTime<Utc> {
    x
}

fn j(v: &serde_json::Value) -> Json<&serde_json::Value> {
    Json(v)
}

fn get_t(r: &PgRow, c: &str) -> Result<DateTime<Utc>, StoreError> {
    r.try_get(c).map_err(classify)
}

fn get_ot(r: &PgRow, c: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    r.try_get(c).map_err(classify)
}

fn get_j(r: &PgRow, c: &str) -> Result<serde_json::Value, StoreError> {
    r.try_get::<Json<serde_json::Value>, _>(c)
        .map(|j| j.0)
        .map_err(classify)
}

fn step_row(r: &PgRow) -> Result<Step, StoreError> {
    super::step_from(
        |c| r.try_get::<i64, _>(c).map_err(classify),
        |c| r.try_get::<i32, _>(c).map_err(classify),
        |c| r.try_get::<Option<String>, _>(c).map_err(classify),
        |c| get_ot(r, c),
        get_j(r, "output")?,
    )
}

type This = PgStore;
include!("plan_queries.rs");

// ---- The action gate (queries shared with SQLite; time from PostgreSQL's clock) ----

type Db = sqlx::Postgres;
const DB_NOW: &str = "now()";
/// Makes gate transactions run one at a time (the mode conflicts with itself, not with reads).
const GATE_SERIALIZE: &str = "LOCK TABLE action_starts IN SHARE ROW EXCLUSIVE MODE";

/// The database's now plus or minus the number of seconds bound to `$param`.
fn db_shift(param: usize, sign: char) -> String {
    format!("(now() {sign} make_interval(secs => ${param}))")
}

include!("gate_queries.rs");

// ---- Restore tests and manual backups (queries shared with SQLite) ----

type DbRow = PgRow;

fn col_json(r: &PgRow, c: &str) -> Result<serde_json::Value, StoreError> {
    get_j(r, c)
}

use crate::domain::manual_backup::{BackupStatus, ManualBackup, NewManualBackup};
use crate::domain::restore_test::{NewRestoreTest, RestoreTest, TestResult, TestStatus};

include!("runbook_queries.rs");
use super::{Attempt, Delivery, DeliveryRecord, NewDelivery, NotifyState};
include!("notify_queries.rs");
include!("watchdog_queries.rs");
