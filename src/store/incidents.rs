//! Incidents: opening and resolving them, their timeline, their findings and diagnosis, and
//! reading them back. Opening alerts and counting re-sends are per backend (see `postgres` and
//! `sqlite`: batched differently); everything else is written once here.

use chrono::{DateTime, Utc};

use super::codec::Json;
use super::query::{Row, Stamp};
use super::{corrupt, Store, StoreError};
use crate::domain::diagnosis::Diagnosis;
use crate::domain::finding::Finding;
use crate::domain::incident::{Incident, IncidentStatus, NewIncident, TimelineEvent};
use crate::domain::plan::Claim;

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
    /// Only incidents routed to this target.
    pub target: Option<String>,
    /// Only incidents of this alert (`alertname`).
    pub alertname: Option<String>,
    pub limit: u32,
}

/// The columns every incident query selects, in [`Incident`] order.
pub(super) const INCIDENT_COLUMNS: &str = "id, status, alertname, fingerprint, severity, labels, \
    annotations, generator_url, starts_at, opened_at, updated_at, resolved_at, last_seen_at, \
    renotified_count, target";

/// An incident from a row of [`INCIDENT_COLUMNS`].
pub(super) fn incident(r: &Row) -> Result<Incident, StoreError> {
    let status: String = r.get("status")?;
    Ok(Incident {
        id: r.get("id")?,
        status: status.parse()?,
        alertname: r.get("alertname")?,
        fingerprint: r.get("fingerprint")?,
        severity: r.get("severity")?,
        labels: r.get("labels")?,
        annotations: r.get("annotations")?,
        generator_url: r.get("generator_url")?,
        starts_at: r.get("starts_at")?,
        opened_at: r.get("opened_at")?,
        updated_at: r.get("updated_at")?,
        resolved_at: r.get("resolved_at")?,
        last_seen_at: r.get("last_seen_at")?,
        renotified_count: r.get("renotified_count")?,
        target: r.get("target")?,
    })
}

/// The `probe_finished` timeline detail of a finding.
fn probe_event(f: &Finding) -> (DateTime<Utc>, serde_json::Value) {
    let at = f.started_at
        + chrono::Duration::milliseconds(i64::try_from(f.duration_ms).unwrap_or(i64::MAX));
    let detail = serde_json::json!({
        "probe": f.probe, "status": f.status, "summary": f.summary,
        "started_at": f.started_at, "duration_ms": f.duration_ms,
    });
    (at, detail)
}

/// The `diagnosed` timeline detail.
fn diagnosed_event(d: &Diagnosis) -> serde_json::Value {
    serde_json::json!({ "scenario": d.scenario, "confidence": d.confidence, "summary": d.summary })
}

impl Store {
    /// Inserts the incident and its `opened` event in one transaction, or finds the existing one
    /// for the same fingerprint and start (the `incidents_alert_key` constraint decides).
    pub async fn open_incident(&self, new: &NewIncident) -> Result<Opened, StoreError> {
        match self {
            Store::Postgres(s) => s.open_incident(new).await,
            Store::Sqlite(s) => s.open_incident(new).await,
        }
    }

    /// [`Store::open_incident`] for several alerts in one transaction (group commit), in order.
    /// Opening is idempotent, so after an error the same alerts can be opened again.
    pub async fn open_incidents(&self, news: &[&NewIncident]) -> Result<Vec<Opened>, StoreError> {
        match self {
            Store::Postgres(s) => s.open_incidents(news).await,
            Store::Sqlite(s) => s.open_incidents(news).await,
        }
    }

    /// Marks the incident of this alert resolved at `at`, with a `resolved` event, once.
    pub async fn resolve_by_alert(
        &self,
        fingerprint: &str,
        starts_at: DateTime<Utc>,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<Resolution, StoreError> {
        let mut tx = self.begin().await?;
        let now = Stamp::of(tx.dialect());
        // A remediated incident keeps that status (the alert clearing is the expected
        // consequence); every other one becomes resolved.
        let sql = format!(
            "UPDATE incidents SET status = CASE WHEN status = 'remediated' THEN status ELSE 'resolved' END, \
             resolved_at = $3, updated_at = {now} \
             WHERE fingerprint = $1 AND starts_at = $2 AND resolved_at IS NULL RETURNING id",
            now = now.sql(4),
        );
        let updated: Option<i64> = tx
            .query(&sql)
            .bind(fingerprint)
            .bind(starts_at)
            .bind(at)
            .bind_stamp(now)
            .fetch_optional_scalar()
            .await?;
        let outcome = match updated {
            Some(id) => {
                let sql = format!(
                    "INSERT INTO incident_events (incident_id, detail, kind, at) VALUES ($1, $2, 'resolved', {now})",
                    now = now.sql(3),
                );
                tx.query(&sql)
                    .bind(id)
                    .bind(Json(detail))
                    .bind_stamp(now)
                    .execute()
                    .await?;
                Resolution::Resolved(id)
            }
            None => tx
                .query("SELECT id FROM incidents WHERE fingerprint = $1 AND starts_at = $2")
                .bind(fingerprint)
                .bind(starts_at)
                .fetch_optional_scalar()
                .await?
                .map_or(Resolution::Unknown, Resolution::AlreadyResolved),
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Adds counted re-sends in one transaction.
    pub async fn record_renotifications(&self, batch: &[Renotified]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self {
            Store::Postgres(s) => s.record_renotifications(batch).await,
            Store::Sqlite(s) => s.record_renotifications(batch).await,
        }
    }

    pub async fn get_incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
        let row = self.reader().query(&sql).bind(id).fetch_optional().await?;
        row.as_ref().map(incident).transpose()
    }

    /// The incident's timeline, oldest first.
    pub async fn timeline(&self, id: i64) -> Result<Vec<TimelineEvent>, StoreError> {
        let rows = self
            .reader()
            .query(
                "SELECT id, at, kind, detail FROM incident_events WHERE incident_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| {
                Ok(TimelineEvent {
                    id: r.get("id")?,
                    at: r.get("at")?,
                    kind: r.get("kind")?,
                    detail: r.get("detail")?,
                })
            })
            .collect()
    }

    /// Up to `filter.limit` incidents, newest first.
    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
    ) -> Result<Vec<Incident>, StoreError> {
        // The placeholders are numbered in the order the filters are added and bound.
        let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1 = 1");
        let mut n = 0;
        let mut clause = |sql: &mut String, text: &str| {
            n += 1;
            sql.push_str(&format!("{text}${n}"));
        };
        if filter.status.is_some() {
            clause(&mut sql, " AND status = ");
        }
        if filter.since.is_some() {
            clause(&mut sql, " AND opened_at >= ");
        }
        if filter.until.is_some() {
            clause(&mut sql, " AND opened_at < ");
        }
        if filter.before_id.is_some() {
            clause(&mut sql, " AND id < ");
        }
        if filter.target.is_some() {
            clause(&mut sql, " AND target = ");
        }
        if filter.alertname.is_some() {
            clause(&mut sql, " AND alertname = ");
        }
        clause(&mut sql, " ORDER BY id DESC LIMIT ");
        let mut q = self.reader().query(&sql);
        if let Some(status) = filter.status {
            q = q.bind(status.as_str());
        }
        if let Some(since) = filter.since {
            q = q.bind(since);
        }
        if let Some(until) = filter.until {
            q = q.bind(until);
        }
        if let Some(before) = filter.before_id {
            q = q.bind(before);
        }
        if let Some(target) = &filter.target {
            q = q.bind(target.as_str());
        }
        if let Some(alertname) = &filter.alertname {
            q = q.bind(alertname.as_str());
        }
        let rows = q.bind(i64::from(filter.limit)).fetch_all().await?;
        rows.iter().map(incident).collect()
    }

    /// Appends one event to an incident's timeline.
    pub async fn append_event(
        &self,
        incident_id: i64,
        at: DateTime<Utc>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        self.writer()
            .query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(incident_id)
            .bind(at)
            .bind(kind)
            .bind(Json(detail))
            .fetch_scalar()
            .await
    }

    /// Stores the findings and diagnosis of an incident, with a `probe_finished` event per probe
    /// and a `diagnosed` event, in one transaction. Returns false (and writes nothing) when the
    /// incident already has a diagnosis (another replica got there first).
    pub async fn save_diagnosis(
        &self,
        incident_id: i64,
        findings: &[Finding],
        d: &Diagnosis,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let inserted = tx
            .query(
                "INSERT INTO diagnoses (incident_id, scenario, confidence, summary, detail, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (incident_id) DO NOTHING",
            )
            .bind(incident_id)
            .bind(d.scenario.as_str())
            .bind(d.confidence)
            .bind(&d.summary)
            .bind(Json(d))
            .bind(at)
            .execute()
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        for f in findings {
            tx.query(
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
            .execute()
            .await?;
            let (at, detail) = probe_event(f);
            tx.query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, 'probe_finished', $3)")
                .bind(incident_id)
                .bind(at)
                .bind(Json(&detail))
                .execute()
                .await?;
        }
        let detail = diagnosed_event(d);
        tx.query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, 'diagnosed', $3)")
            .bind(incident_id)
            .bind(at)
            .bind(Json(&detail))
            .execute()
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The incident's findings, in probe order.
    pub async fn findings(&self, incident_id: i64) -> Result<Vec<Finding>, StoreError> {
        let rows = self
            .reader()
            .query(
                "SELECT probe, status, summary, evidence, signals, started_at, duration_ms FROM findings \
                 WHERE incident_id = $1 ORDER BY id",
            )
            .bind(incident_id)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.get("status")?;
                Ok(Finding {
                    probe: r.get("probe")?,
                    status: serde_json::from_value(serde_json::Value::String(status))
                        .map_err(|e| corrupt("finding status", e))?,
                    summary: r.get("summary")?,
                    evidence: r.get("evidence")?,
                    signals: serde_json::from_value(r.get("signals")?)
                        .map_err(|e| corrupt("finding signals", e))?,
                    started_at: r.get("started_at")?,
                    duration_ms: u64::try_from(r.get::<i64>("duration_ms")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// The incident's diagnosis, once made.
    pub async fn diagnosis(&self, incident_id: i64) -> Result<Option<Diagnosis>, StoreError> {
        let detail: Option<serde_json::Value> = self
            .reader()
            .query("SELECT detail FROM diagnoses WHERE incident_id = $1")
            .bind(incident_id)
            .fetch_optional_scalar()
            .await?;
        detail
            .map(|d| serde_json::from_value(d).map_err(|e| corrupt("diagnosis", e)))
            .transpose()
    }

    /// Moves an open incident to `status` (escalated, remediated) with its event; `false` if it
    /// was no longer open (an escalated one may still become remediated).
    pub async fn settle(
        &self,
        incident_id: i64,
        status: IncidentStatus,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.settle_with(incident_id, status, at, detail, None)
            .await
    }

    /// [`Store::settle`], and in the same transaction every step of the plan not yet started
    /// (planned, waiting for approval, approved) is skipped with `why` and a `step_skipped`
    /// event, while `claim` is still the incident's: nobody reads a settled incident whose
    /// plan still looks pending.
    pub async fn settle_skipping_rest(
        &self,
        incident_id: i64,
        status: IncidentStatus,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
        claim: &Claim,
        why: &str,
    ) -> Result<bool, StoreError> {
        self.settle_with(incident_id, status, at, detail, Some((claim, why)))
            .await
    }

    async fn settle_with(
        &self,
        incident_id: i64,
        status: IncidentStatus,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
        skip_rest: Option<(&Claim, &str)>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        // A fix proven after the deadline escalated (its step was still running) is still a
        // fix: an escalated incident may become remediated; nothing else leaves `escalated`.
        let from = if status == IncidentStatus::Remediated {
            "status IN ('open', 'escalated')"
        } else {
            "status = 'open'"
        };
        let done = tx
            .query(&format!(
                "UPDATE incidents SET status = $1, updated_at = $2 WHERE id = $3 AND {from}"
            ))
            .bind(status.as_str())
            .bind(at)
            .bind(incident_id)
            .execute()
            .await?;
        if done == 0 {
            return Ok(false);
        }
        tx.query(
            "INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(incident_id)
        .bind(at)
        .bind(status.as_str())
        .bind(Json(detail))
        .execute()
        .await?;
        if let Some((claim, why)) = skip_rest {
            let pending = tx
                .query(
                    "SELECT s.id, s.seq, s.kind, s.name, s.target FROM plan_steps s \
                     JOIN incidents i ON i.id = s.incident_id \
                     WHERE s.incident_id = $1 AND s.state IN ('planned', 'waiting_approval', 'approved') \
                     AND i.claimed_by = $2 AND i.claim_epoch = $3 ORDER BY s.seq",
                )
                .bind(incident_id)
                .bind(claim.holder.as_str())
                .bind(claim.epoch)
                .fetch_all()
                .await?;
            for row in &pending {
                let step_id: i64 = row.get("id")?;
                tx.query(
                    "UPDATE plan_steps SET state = 'skipped', reason = $1, finished_at = $2 \
                     WHERE id = $3",
                )
                .bind(why)
                .bind(at)
                .bind(step_id)
                .execute()
                .await?;
                let event = serde_json::json!({
                    "step": step_id,
                    "seq": row.get::<i32>("seq")?,
                    "kind": row.get::<String>("kind")?,
                    "name": row.get::<String>("name")?,
                    "target": row.get::<String>("target")?,
                    "state": "skipped",
                    "reason": why,
                });
                tx.query(
                    "INSERT INTO incident_events (incident_id, at, kind, detail) \
                     VALUES ($1, $2, 'step_skipped', $3)",
                )
                .bind(incident_id)
                .bind(at)
                .bind(Json(&event))
                .execute()
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }
}
