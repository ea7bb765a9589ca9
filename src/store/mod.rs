//! The incident store: one interface, a PostgreSQL implementation for production and an embedded
//! SQLite one for a bare machine. SQL lives in this module and nowhere else.

mod group_commit;
mod postgres;
mod sqlite;
mod sqlite_pools;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::diagnosis::Diagnosis;
use crate::domain::finding::Finding;
use crate::domain::incident::{Incident, IncidentStatus, NewIncident, TimelineEvent};
use crate::domain::plan::{Claim, GateOutcome, GateRequest, PlannedStep, Step, Transition};

pub use group_commit::GroupCommit;
pub use outbox::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A store failure. [`StoreError::is_unavailable`] tells a caller whether retrying later can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the incident store is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("an incident store query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("the store holds a value this version cannot read: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the store could not be reached or is overloaded: the caller should answer 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Sorts a sqlx error into "the store is down" and "this query failed".
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let down = match &err {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Protocol(_) => true,
        E::Database(db) => match db.code().as_deref() {
            // Connection exceptions, shutdown, too many connections, database gone (PostgreSQL);
            // SQLITE_BUSY / SQLITE_LOCKED (5, 6) and SQLITE_CANTOPEN (14) for SQLite.
            Some(code) => {
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code == "3D000"
                    || code == "5"
                    || code == "6"
                    || code == "14"
            }
            None => false,
        },
        _ => false,
    };
    if down {
        StoreError::Unavailable(err)
    } else {
        StoreError::Query(err)
    }
}

/// Outcome of [`Store::open_incident`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// This call created the incident (and its `opened` event).
    Created(i64),
    /// The incident already existed (another request or replica created it).
    Existing(i64),
}

impl Opened {
    pub fn id(self) -> i64 {
        match self {
            Opened::Created(id) | Opened::Existing(id) => id,
        }
    }
}

/// Outcome of [`Store::resolve_by_alert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Resolved(i64),
    AlreadyResolved(i64),
    Unknown,
}

/// Re-sends of one incident counted in memory, written in one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renotified {
    pub incident_id: i64,
    pub count: i64,
    pub last_seen_at: DateTime<Utc>,
}

/// Filters and page for [`Store::list_incidents`]. Newest first; `before_id` is the cursor.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// The incident store, on PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Postgres($s) => $call,
            Store::Sqlite($s) => $call,
        }
    };
}

// After `dispatch!`, which they use.
mod outbox;
mod watchdog;

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite:…`), or to the SQLite file at `sqlite_path`
    /// when `url` is empty. Does not migrate.
    pub async fn connect(
        url: &str,
        sqlite_path: &Path,
        opts: &StoreOptions,
    ) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(url, opts).await?))
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            Ok(Store::Sqlite(
                SqliteStore::open(Path::new(path), opts).await?,
            ))
        } else if url.is_empty() {
            Ok(Store::Sqlite(SqliteStore::open(sqlite_path, opts).await?))
        } else {
            Err(StoreError::Url(
                "expected postgres://, postgresql:// or sqlite:".into(),
            ))
        }
    }

    /// Which backend, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the pending migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.migrate().await)
    }

    /// Cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }

    /// Inserts the incident and its `opened` event in one transaction, or finds the existing one
    /// for the same fingerprint and start (the `incidents_alert_key` constraint decides).
    pub async fn open_incident(&self, new: &NewIncident) -> Result<Opened, StoreError> {
        dispatch!(self, s => s.open_incident(new).await)
    }

    /// [`Store::open_incident`] for several alerts in one transaction (group commit), in order.
    /// Opening is idempotent, so after an error the same alerts can be opened again.
    pub async fn open_incidents(&self, news: &[&NewIncident]) -> Result<Vec<Opened>, StoreError> {
        dispatch!(self, s => s.open_incidents(news).await)
    }

    /// Marks the incident of this alert resolved at `at`, with a `resolved` event, once.
    pub async fn resolve_by_alert(
        &self,
        fingerprint: &str,
        starts_at: DateTime<Utc>,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<Resolution, StoreError> {
        dispatch!(self, s => s.resolve_by_alert(fingerprint, starts_at, at, detail).await)
    }

    /// Adds counted re-sends in one transaction.
    pub async fn record_renotifications(&self, batch: &[Renotified]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        dispatch!(self, s => s.record_renotifications(batch).await)
    }

    pub async fn get_incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        dispatch!(self, s => s.get_incident(id).await)
    }

    /// The incident's timeline, oldest first.
    pub async fn timeline(&self, id: i64) -> Result<Vec<TimelineEvent>, StoreError> {
        dispatch!(self, s => s.timeline(id).await)
    }

    /// Up to `filter.limit` incidents, newest first.
    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<Incident>, StoreError> {
        dispatch!(self, s => s.list_incidents(filter).await)
    }

    /// Appends one event to an incident's timeline.
    pub async fn append_event(
        &self,
        incident_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        dispatch!(self, s => s.append_event(incident_id, at, kind, detail).await)
    }

    /// Stores the findings and diagnosis of an incident, with a `probe_finished` event per probe
    /// and a `diagnosed` event, in one transaction. Returns false (and writes nothing) when the
    /// incident already has a diagnosis (another replica got there first).
    pub async fn save_diagnosis(
        &self,
        incident_id: i64,
        findings: &[Finding],
        diagnosis: &Diagnosis,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.save_diagnosis(incident_id, findings, diagnosis, at).await)
    }

    /// The incident's findings, in probe order.
    pub async fn findings(&self, incident_id: i64) -> Result<Vec<Finding>, StoreError> {
        dispatch!(self, s => s.findings(incident_id).await)
    }

    /// The incident's diagnosis, once made.
    pub async fn diagnosis(&self, incident_id: i64) -> Result<Option<Diagnosis>, StoreError> {
        dispatch!(self, s => s.diagnosis(incident_id).await)
    }

    /// Open incidents without a diagnosis, oldest first (work left by a stopped process).
    pub async fn undiagnosed(&self, limit: i64) -> Result<Vec<i64>, StoreError> {
        dispatch!(self, s => s.undiagnosed(limit).await)
    }

    /// Closes the pool, waiting for connections in use to be returned.
    /// Stores the plan with a `planned` event; `false` if the incident already had one.
    pub async fn save_plan(
        &self,
        incident_id: i64,
        steps: &[PlannedStep],
        detail: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.save_plan(incident_id, steps, detail, at).await)
    }

    /// The incident's plan, in order (empty before planning).
    pub async fn steps(&self, incident_id: i64) -> Result<Vec<Step>, StoreError> {
        dispatch!(self, s => s.steps(incident_id).await)
    }

    /// Moves a step if it is still in one of `tr.from`, with a timeline event carrying `detail`.
    pub async fn transition(
        &self,
        tr: &Transition<'_>,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.transition(tr, detail).await)
    }

    /// Releases `holder`'s claim; `work_done` marks the incident as needing no more work.
    pub async fn release(
        &self,
        incident_id: i64,
        holder: &str,
        work_done: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.release(incident_id, holder, work_done).await)
    }

    /// Open incidents with work left and no live claim: (id, alertname), oldest first.
    pub async fn claimable(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        dispatch!(self, s => s.claimable(now, limit).await)
    }

    /// Moves an open incident to `status` (escalated, remediated) with its event.
    pub async fn settle(
        &self,
        incident_id: i64,
        status: IncidentStatus,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.settle(incident_id, status, at, detail).await)
    }

    pub async fn unlock_target(&self, target: &str, incident_id: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.unlock_target(target, incident_id).await)
    }

    /// Claims the incident for `holder` for `lease` (judged by the database's clock) unless
    /// another live claim holds it; returns the new claim's epoch (the fencing token).
    pub async fn claim(
        &self,
        incident_id: i64,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let secs = i64::try_from(lease.as_secs()).unwrap_or(i64::MAX / 2);
        let epoch = dispatch!(self, s => s.claim(incident_id, holder, secs).await)?;
        Ok(epoch.map(|epoch| Claim {
            holder: holder.to_owned(),
            epoch,
        }))
    }

    /// Extends `claim` by `lease` while it is still the incident's current claim; `false` when
    /// another process has claimed the incident since (this one must stop working it).
    pub async fn renew_claim(
        &self,
        incident_id: i64,
        claim: &Claim,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let secs = i64::try_from(lease.as_secs()).unwrap_or(i64::MAX / 2);
        dispatch!(self, s => s.renew_claim(incident_id, claim, secs).await)
    }

    /// The action gate (see [`GateRequest`]): one transaction that starts the step or says why
    /// not.
    pub async fn gate(&self, request: &GateRequest<'_>) -> Result<GateOutcome, StoreError> {
        dispatch!(self, s => s.gate(request).await)
    }

    /// Incidents of alert `fingerprint` opened before `before_id` within `window` (database
    /// clock): the flapping breaker's count.
    pub async fn recent_incidents(
        &self,
        fingerprint: &str,
        before_id: i64,
        window: Duration,
    ) -> Result<i64, StoreError> {
        let secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX / 2);
        dispatch!(self, s => s.recent_incidents(fingerprint, before_id, secs).await)
    }

    /// The per-installation key (stores `fresh` if there is none yet).
    pub async fn installation_key(&self, fresh: &str) -> Result<String, StoreError> {
        dispatch!(self, s => s.installation_key(fresh).await)
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    // ---- Restore tests and manual backups ----

    /// Records a running restore test; `None` when its (slot, database) is taken already (a
    /// scheduled run another replica started).
    pub async fn insert_restore_test(
        &self,
        new: &crate::domain::restore_test::NewRestoreTest,
    ) -> Result<Option<i64>, StoreError> {
        dispatch!(self, s => s.insert_restore_test(new).await)
    }

    /// Stores how a restore test ended.
    pub async fn finish_restore_test(
        &self,
        id: i64,
        outcome: &crate::domain::restore_test::TestResult,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.finish_restore_test(id, outcome).await)
    }

    /// Links a failed restore test to the incident it opened.
    pub async fn set_restore_test_incident(
        &self,
        id: i64,
        incident_id: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_restore_test_incident(id, incident_id).await)
    }

    pub async fn get_restore_test(
        &self,
        id: i64,
    ) -> Result<Option<crate::domain::restore_test::RestoreTest>, StoreError> {
        dispatch!(self, s => s.get_restore_test(id).await)
    }

    /// Up to `limit` restore tests, newest first, below `before_id` when given.
    pub async fn list_restore_tests(
        &self,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::domain::restore_test::RestoreTest>, StoreError> {
        dispatch!(self, s => s.list_restore_tests(before_id, limit).await)
    }

    /// Marks tests `running` since before `older_than` as interrupted; returns their scratch
    /// databases.
    pub async fn interrupt_stale_restore_tests(
        &self,
        older_than: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.interrupt_stale_restore_tests(older_than, now).await)
    }

    /// Records a launched manual backup.
    pub async fn insert_manual_backup(
        &self,
        new: &crate::domain::manual_backup::NewManualBackup,
    ) -> Result<i64, StoreError> {
        dispatch!(self, s => s.insert_manual_backup(new).await)
    }

    /// Stores how a manual backup ended.
    pub async fn finish_manual_backup(
        &self,
        id: i64,
        status: crate::domain::manual_backup::BackupStatus,
        reason: Option<&str>,
        at: DateTime<Utc>,
        object_keys: &[String],
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.finish_manual_backup(id, status, reason, at, object_keys, detail).await)
    }

    pub async fn get_manual_backup(
        &self,
        id: i64,
    ) -> Result<Option<crate::domain::manual_backup::ManualBackup>, StoreError> {
        dispatch!(self, s => s.get_manual_backup(id).await)
    }

    /// Up to `limit` manual backups, newest first, below `before_id` when given.
    pub async fn list_manual_backups(
        &self,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<crate::domain::manual_backup::ManualBackup>, StoreError> {
        dispatch!(self, s => s.list_manual_backups(before_id, limit).await)
    }
}

/// The columns every incident query selects, in [`Incident`] order.
pub(crate) const INCIDENT_COLUMNS: &str = "id, status, alertname, fingerprint, severity, labels, \
    annotations, generator_url, starts_at, opened_at, updated_at, resolved_at, last_seen_at, \
    renotified_count";

pub(crate) fn parse_status(s: &str) -> Result<IncidentStatus, StoreError> {
    s.parse().map_err(StoreError::Corrupt)
}

/// Adds the filter's WHERE clauses, order and limit to a query builder of either backend.
pub(crate) fn push_filter<'a, DB, T>(
    qb: &mut sqlx::QueryBuilder<'a, DB>,
    filter: &IncidentFilter,
    time: impl Fn(DateTime<Utc>) -> T,
) where
    DB: sqlx::Database,
    T: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB> + Send,
    i64: 'a + sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if let Some(st) = filter.status {
        qb.push(" AND status = ").push_bind(st.as_str());
    }
    if let Some(since) = filter.since {
        qb.push(" AND opened_at >= ").push_bind(time(since));
    }
    if let Some(until) = filter.until {
        qb.push(" AND opened_at < ").push_bind(time(until));
    }
    if let Some(before) = filter.before_id {
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(filter.limit));
}

/// The `probe_finished` timeline detail of a finding.
pub(crate) fn probe_event(f: &Finding) -> (DateTime<Utc>, serde_json::Value) {
    let at = f.started_at
        + chrono::Duration::milliseconds(i64::try_from(f.duration_ms).unwrap_or(i64::MAX));
    let detail = serde_json::json!({
        "probe": f.probe, "status": f.status, "summary": f.summary,
        "started_at": f.started_at, "duration_ms": f.duration_ms,
    });
    (at, detail)
}

/// The `diagnosed` timeline detail.
pub(crate) fn diagnosed_event(d: &Diagnosis) -> serde_json::Value {
    serde_json::json!({ "scenario": d.scenario, "confidence": d.confidence, "summary": d.summary })
}

/// Builds a [`Step`] from a row through per-backend column readers.
pub(crate) fn step_from(
    int: impl Fn(&str) -> Result<i64, StoreError>,
    small: impl Fn(&str) -> Result<i32, StoreError>,
    text: impl Fn(&str) -> Result<Option<String>, StoreError>,
    time: impl Fn(&str) -> Result<Option<DateTime<Utc>>, StoreError>,
    output: serde_json::Value,
) -> Result<Step, StoreError> {
    let req =
        |c: &str| text(c)?.ok_or_else(|| StoreError::Corrupt(format!("plan step {c} is NULL")));
    let parse = |c: &str| -> Result<String, StoreError> { req(c) };
    Ok(Step {
        id: int("id")?,
        incident_id: int("incident_id")?,
        seq: small("seq")?,
        group: small("attempt_group")?,
        kind: parse("kind")?.parse().map_err(StoreError::Corrupt)?,
        name: req("name")?,
        target: req("target")?,
        decision: parse("decision")?.parse().map_err(StoreError::Corrupt)?,
        state: parse("state")?.parse().map_err(StoreError::Corrupt)?,
        reason: req("reason")?,
        output,
        decided_by: text("decided_by")?,
        decided_at: time("decided_at")?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
    })
}

pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}
