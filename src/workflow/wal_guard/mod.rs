//! The WAL-archive guard. A stuck `archive_command` raises no backup alert until much later, and
//! meanwhile pg_wal grows until its volume fills and the primary stops. Every
//! `wal_archive.interval_seconds` the guard reads each guarded target's primary (those with a
//! `wal_archive.database_url`: `pg_stat_archiver`, the WAL position, the `.ready` segments, the
//! server log's lines about the archive command, the volume) and judges it with
//! [`crate::domain::wal::assess`].
//!
//! When archiving has kept failing for `wal_archive.failing_minutes` it opens a
//! `PostgreSQLWALArchiveFailing` incident for the target through the [`Intake`], like an alert
//! (so the engine diagnoses, plans, notifies and escalates it), with the cause and the forecast
//! of when the volume fills in its description and on its timeline; one per target, never a
//! second while it is open or escalated (a new cause joins its timeline). When archiving works
//! again the guard resolves it. The failure's start is read from the primary (the oldest
//! segment waiting), so every replica and a restarted process judge alike; the intake's
//! fingerprint keeps replicas from opening two. It reads only: it never deletes WAL and never
//! changes `archive_command`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::watch;

use crate::config::Settings;
use crate::domain::alert::WAL_ARCHIVE_FAILING;
use crate::domain::duration::human;
use crate::domain::wal::Assessment;
use crate::probes::wal_archive;
use crate::store::{Store, StoreError};
use crate::workflow::intake::{Intake, Outcome};
use crate::workflow::own_alert::{self, OwnAlert};

/// One target the guard reads.
struct Guarded {
    name: String,
    settings: Arc<Settings>,
    /// The labels that route its incident back to it.
    labels: BTreeMap<String, String>,
}

/// What one check did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    /// Each guarded target's assessment, or why its primary could not be read.
    pub assessed: BTreeMap<String, Result<Assessment, String>>,
    /// Incidents opened (target → id).
    pub opened: BTreeMap<String, i64>,
    /// Incidents resolved because archiving works again.
    pub resolved: BTreeMap<String, i64>,
}

/// Reads the guarded primaries every interval; see the module documentation.
pub struct WalGuard {
    settings: Arc<Settings>,
    targets: Vec<Guarded>,
    store: Store,
    intake: Arc<Intake>,
}

/// The incident fingerprint of a target's failing archive: stable, 16 hex digits.
pub fn fingerprint(target: &str) -> String {
    let digest = sha2::Sha256::digest(format!("wal-archive:{target}").as_bytes());
    hex::encode(digest)[..16].to_owned()
}

impl WalGuard {
    pub fn new(settings: Arc<Settings>, store: Store, intake: Arc<Intake>) -> Self {
        let targets = settings
            .fleet
            .iter()
            .filter(|t| {
                !t.settings
                    .wal_archive
                    .database_url
                    .expose_secret()
                    .is_empty()
            })
            .map(|t| Guarded {
                name: t.name.clone(),
                settings: t.settings.clone(),
                labels: t.matcher.labels.clone(),
            })
            .collect();
        Self {
            settings,
            targets,
            store,
            intake,
        }
    }

    /// The names of the guarded targets.
    pub fn guarded(&self) -> Vec<&str> {
        self.targets.iter().map(|t| t.name.as_str()).collect()
    }

    /// Checks now and every interval until `stop`. Does nothing when `wal_archive.enabled` is
    /// false or no target is guarded.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.settings.wal_archive.enabled || self.targets.is_empty() {
            return;
        }
        let every = Duration::from_secs(self.settings.wal_archive.interval_seconds.max(1));
        loop {
            if let Err(e) = self.check_at(Utc::now()).await {
                tracing::warn!(error = %e, "the WAL-archive guard could not record its check");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Reads every guarded primary and judges it as of `now` (tests pass a later `now` to see
    /// a failure that has lasted).
    pub async fn check_at(&self, now: DateTime<Utc>) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        for t in &self.targets {
            let a = match wal_archive::examine(&t.settings, now).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(target_name = %t.name, error = %e, "the WAL-archive guard could not read the primary");
                    report.assessed.insert(t.name.clone(), Err(e.to_string()));
                    continue;
                }
            };
            let lasted = a.failing_since.map(|s| (now - s).num_seconds());
            let limit =
                i64::try_from(t.settings.wal_archive.failing_minutes).unwrap_or(i64::MAX) * 60;
            if a.failing && lasted.is_some_and(|s| s >= limit) {
                if let Some(id) = self.open(t, &a, now).await? {
                    report.opened.insert(t.name.clone(), id);
                }
            } else if !a.failing {
                if let Some(id) = self.resolve(t).await? {
                    report.resolved.insert(t.name.clone(), id);
                }
            }
            report.assessed.insert(t.name.clone(), Ok(a));
        }
        Ok(report)
    }

    /// Opens the target's incident through the intake, or puts a new cause on the live one.
    async fn open(
        &self,
        t: &Guarded,
        a: &Assessment,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let fp = fingerprint(&t.name);
        if let Some((id, _)) = self.store.live_incident(&fp).await? {
            let known = self.store.timeline(id).await?.iter().any(|e| {
                e.kind == "wal_archive_found" && e.detail["cause"] == json!(a.cause)["cause"]
            });
            if !known {
                self.store
                    .append_event(id, now, "wal_archive_found", &evidence(a))
                    .await?;
            }
            return Ok(None);
        }
        let since = a.failing_since.unwrap_or(now);
        let mut labels = vec![
            ("alertname", WAL_ARCHIVE_FAILING.to_owned()),
            ("severity", "critical".to_owned()),
            ("component", "postgresql-wal-archive".to_owned()),
            ("namespace", t.settings.kubernetes.namespace.clone()),
            ("source", "wal_guard".to_owned()),
        ];
        own_alert::add_routing(&mut labels, &t.labels);
        let annotations = [
            (
                "summary",
                format!(
                    "WAL archiving of {} has failed for {}",
                    t.name,
                    human((now - since).num_seconds())
                ),
            ),
            (
                "description",
                format!(
                    "{} failures, last segment {}: {}. {}. Nothing was deleted and archive_command \
                     was not changed.",
                    a.failed_count,
                    a.last_failed_wal.as_deref().unwrap_or("unknown"),
                    a.cause.words(),
                    a.forecast
                ),
            ),
        ];
        let alert = OwnAlert {
            name: WAL_ARCHIVE_FAILING,
            receiver: "wal_guard",
            fingerprint: &fp,
            starts_at: since,
            ends_at: None,
            labels: &labels,
            annotations: &annotations,
        };
        let (id, outcome) = own_alert::deliver(&self.intake, alert).await?;
        if outcome != Some(Outcome::Opened) {
            return Ok(None);
        }
        if let Some(id) = id {
            self.store
                .append_event(id, now, "wal_archive_found", &evidence(a))
                .await?;
            tracing::warn!(incident_id = id, target_name = %t.name, forecast = %a.forecast, "WAL archiving keeps failing: incident opened");
        }
        Ok(id)
    }

    /// Resolves the target's live incident: archiving works again.
    async fn resolve(&self, t: &Guarded) -> Result<Option<i64>, StoreError> {
        let fp = fingerprint(&t.name);
        let labels = [
            ("alertname", WAL_ARCHIVE_FAILING.to_owned()),
            ("source", "wal_guard".to_owned()),
        ];
        own_alert::resolve(
            &self.store,
            &self.intake,
            WAL_ARCHIVE_FAILING,
            "wal_guard",
            &fp,
            &labels,
        )
        .await
    }
}

/// The `wal_archive_found` event of an assessment.
fn evidence(a: &Assessment) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    v["cause"] = json!(a.cause)["cause"].clone();
    v["cause_words"] = json!(a.cause.words());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_stable_per_target_and_unlike_the_watchdogs() {
        let f = fingerprint("billing");
        assert_eq!(f.len(), 16);
        assert_eq!(f, fingerprint("billing"));
        assert_ne!(f, fingerprint("shop"));
        assert_ne!(
            f,
            crate::workflow::watchdog::target_fingerprint("billing", "billing")
        );
    }
}
