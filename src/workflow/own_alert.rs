//! Alerts the service raises itself — the freshness watchdog's `PostgreSQLBackupStale`, the
//! WAL-archive guard's `PostgreSQLWALArchiveFailing` — handed to the [`Intake`] exactly as
//! Alertmanager's webhook would hand them, so that they are deduplicated, routed, diagnosed,
//! planned, notified and escalated like any alert.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::alert::{Alert, AlertStatus, Notification};
use crate::store::{Store, StoreError};
use crate::workflow::intake::{Intake, Outcome};

/// One alert of the service's own.
pub struct OwnAlert<'a> {
    /// The alert name (`alertname`).
    pub name: &'a str,
    /// Who raised it (the notification's receiver and group key prefix).
    pub receiver: &'a str,
    pub fingerprint: &'a str,
    pub starts_at: DateTime<Utc>,
    /// Set: the alert is resolved.
    pub ends_at: Option<DateTime<Utc>>,
    pub labels: &'a [(&'a str, String)],
    pub annotations: &'a [(&'a str, String)],
}

/// Adds a target's match labels that `labels` does not already carry, so that intake routes the
/// alert back to that target.
pub fn add_routing<'a>(labels: &mut Vec<(&'a str, String)>, target: &'a BTreeMap<String, String>) {
    for (k, v) in target {
        if !labels.iter().any(|(l, _)| l == k) {
            labels.push((k.as_str(), v.clone()));
        }
    }
}

/// Hands `a` to the intake: the incident's id and what intake did with it.
pub async fn deliver(
    intake: &Intake,
    a: OwnAlert<'_>,
) -> Result<(Option<i64>, Option<Outcome>), StoreError> {
    let map = |kv: &[(&str, String)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let status = if a.ends_at.is_some() {
        AlertStatus::Resolved
    } else {
        AlertStatus::Firing
    };
    let alert = Alert {
        name: a.name.to_owned(),
        status,
        fingerprint: a.fingerprint.to_owned(),
        starts_at: a.starts_at,
        ends_at: a.ends_at,
        labels: map(a.labels),
        annotations: map(a.annotations),
        generator_url: String::new(),
        adjustments: Vec::new(),
    };
    let n = Notification {
        receiver: a.receiver.to_owned(),
        status,
        group_key: format!("{}:{}", a.receiver, a.fingerprint),
        group_labels: BTreeMap::new(),
        common_labels: alert.labels.clone(),
        common_annotations: alert.annotations.clone(),
        external_url: String::new(),
        truncated_alerts: 0,
        alerts: vec![alert],
        adjustments: Vec::new(),
    };
    let results = intake.accept(&n).await?;
    Ok(results
        .first()
        .map_or((None, None), |r| (r.incident_id, Some(r.outcome))))
}

/// Resolves the live (open or escalated) incident of `fingerprint`, raised by `receiver` as
/// `name`: its id when intake resolved it.
pub async fn resolve(
    store: &Store,
    intake: &Intake,
    name: &str,
    receiver: &str,
    fingerprint: &str,
    labels: &[(&str, String)],
) -> Result<Option<i64>, StoreError> {
    let Some((_, starts_at)) = store.live_incident(fingerprint).await? else {
        return Ok(None);
    };
    let alert = OwnAlert {
        name,
        receiver,
        fingerprint,
        starts_at,
        ends_at: Some(Utc::now()),
        labels,
        annotations: &[],
    };
    let (id, outcome) = deliver(intake, alert).await?;
    Ok(id.filter(|_| outcome == Some(Outcome::Resolved)))
}
