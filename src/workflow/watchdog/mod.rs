//! The freshness watchdog, a dead man's switch. `PostgreSQLBackupFailed` depends on a metric that
//! a dead, suspended or deleted CronJob simply stops emitting (`time() - last_success > 86400` is
//! empty when the series is gone), so the service also looks for itself: every
//! `watchdog.interval_minutes`, once per period across replicas (the period's row in the store),
//! it lists the backups under the prefix once, finds the newest backup of each database with the
//! restore test's naming rules ([`crate::runbook::restore::database_of`]), and reads the backup metric from
//! Prometheus once.
//!
//! A database whose newest backup is older than `notify.rpo_hours`, that has none, whose
//! metric series is gone, or whose metric's last success is that old while S3 could not show a
//! fresh backup gets a `PostgreSQLBackupStale` incident with a stable fingerprint,
//! opened through the [`Intake`] like an alert — so the engine diagnoses it, plans, gates,
//! notifies and escalates it exactly as it does `PostgreSQLBackupFailed`. While an incident
//! about the target's backups is open or escalated — that one, or the alert's, whatever its name
//! — no other is opened: the watchdog's evidence goes on its timeline (one root cause, one page).
//! When the backups are fresh again the watchdog resolves its own incident. A listing that could
//! not read every key (see [`crate::infra::s3::Cut`]) proves a fresh backup it found and nothing
//! else: it is reported unanswered, never "stale" or "no backup".
//! A watchdog that finds nothing wrong opens nothing and costs one S3 listing (one request
//! per 1000 keys under the prefix) and one Prometheus query per period.

mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::watch;

pub use verdict::{judge, Listed, Reason, Verdict};

use crate::config::Settings;
use crate::domain::alert::BACKUP_STALE;
use crate::infra::s3::Listing;
use crate::probes::s3::job_s3;
use crate::probes::{Clients, ProbeContext};
use crate::store::{Store, StoreError};
use crate::workflow::intake::{Intake, Outcome};
use crate::workflow::own_alert::{self, OwnAlert};

/// The metric the backup job reports (the alert rules' and the `backup_metrics` probe's).
const LAST_SUCCESS: &str = "postgres_backup_last_success_timestamp";

/// Why the watchdog could not list the backups.
#[derive(Debug, thiserror::Error)]
enum Unlisted {
    #[error(transparent)]
    Client(#[from] crate::probes::s3::JobS3Error),
    #[error(transparent)]
    Listing(#[from] crate::runbook::restore::ListingError),
}

/// What one period's check did.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodReport {
    pub period: DateTime<Utc>,
    pub verdicts: Vec<Verdict>,
    /// Incidents opened this period (database → incident id).
    pub opened: BTreeMap<String, i64>,
    /// Incidents resolved this period because the backups are fresh again.
    pub resolved: BTreeMap<String, i64>,
    /// ListObjectsV2 requests made.
    pub s3_list_requests: u32,
    /// The sources that did not answer ("s3", "prometheus") and why: the watchdog could not look
    /// there this period, so a silence from it proves nothing. Counted and logged.
    pub unanswered: BTreeMap<String, String>,
}

/// One target the watchdog looks after.
struct Watched {
    name: String,
    settings: Arc<Settings>,
    /// The implied target of a configuration without `[[targets]]`: its incidents keep the
    /// fingerprints they had before targets existed.
    implied: bool,
    /// The labels that route its incidents back to it.
    labels: BTreeMap<String, String>,
}

/// Checks backup freshness every period; see the module documentation.
pub struct Watchdog {
    /// The top-level settings (period, Prometheus, probes' deadline).
    settings: Arc<Settings>,
    targets: Vec<Watched>,
    store: Store,
    intake: Arc<Intake>,
    kube: Option<kube::Client>,
    http: reqwest::Client,
    clients: Arc<Clients>,
    holder: String,
}

/// The incident fingerprint of a database's stale backups: stable, 16 hex digits.
pub fn fingerprint(database: &str) -> String {
    let digest = sha2::Sha256::digest(format!("watchdog:{database}").as_bytes());
    hex::encode(digest)[..16].to_owned()
}

/// [`fingerprint`] of a database of a configured target (two targets may name a database alike).
pub fn target_fingerprint(target: &str, database: &str) -> String {
    let digest = sha2::Sha256::digest(format!("watchdog:{target}:{database}").as_bytes());
    hex::encode(digest)[..16].to_owned()
}

impl Watched {
    fn fingerprint(&self, database: &str) -> String {
        if self.implied {
            fingerprint(database)
        } else {
            target_fingerprint(&self.name, database)
        }
    }

    /// Where a database is reported: its name, or `target/database` with several targets.
    fn key(&self, database: &str) -> String {
        if self.implied {
            database.to_owned()
        } else {
            format!("{}/{database}", self.name)
        }
    }
}

/// The start of the period `now` falls in (periods are aligned to the Unix epoch, so every
/// replica computes the same ones).
pub fn period_of(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX).max(1);
    let start = now.timestamp().div_euclid(step) * step;
    Utc.timestamp_opt(start, 0).single().unwrap_or(now)
}

impl Watchdog {
    pub fn new(
        settings: Arc<Settings>,
        store: Store,
        intake: Arc<Intake>,
        kube: Option<kube::Client>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.probes.deadline_ms))
            .build()
            .unwrap_or_default();
        let implied = settings.targets.is_empty();
        let targets = settings
            .fleet
            .iter()
            .map(|t| Watched {
                name: t.name.clone(),
                settings: t.settings.clone(),
                implied,
                labels: t.matcher.labels.clone(),
            })
            .collect();
        Self {
            settings,
            targets,
            store,
            intake,
            kube,
            http,
            clients: Arc::default(),
            holder: format!(
                "{}-{}-{:08x}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned()),
                std::process::id(),
                rand::random::<u32>()
            ),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.settings.watchdog.interval_minutes.max(1) * 60)
    }

    /// Checks the current period at start and every period after, until `stop` turns true.
    /// Does nothing when `watchdog.enabled` is false.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if !self.settings.watchdog.enabled {
            return;
        }
        let interval = self.interval();
        loop {
            let period = period_of(Utc::now(), interval);
            if let Err(e) = self.check_period(period).await {
                crate::metrics::watchdog_run(crate::metrics::WatchdogRun::Error);
                tracing::warn!(error = %e, %period, "the watchdog could not check this period");
            }
            let next = period + chrono::Duration::from_std(interval).unwrap_or_default();
            // A little after the boundary, so that replicas' clocks need not agree to the second.
            let wait = (next - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Checks `period` if no replica has: `Ok(None)` when another one took it.
    pub async fn check_period(
        &self,
        period: DateTime<Utc>,
    ) -> Result<Option<PeriodReport>, StoreError> {
        if !self
            .store
            .claim_watchdog_period(period, &self.holder)
            .await?
        {
            crate::metrics::watchdog_run(crate::metrics::WatchdogRun::Taken);
            return Ok(None);
        }
        let report = self.check(period).await?;
        let findings: Vec<Value> = report
            .verdicts
            .iter()
            .map(
                |v| json!({ "database": v.database, "reasons": v.reasons, "evidence": v.evidence }),
            )
            .collect();
        self.store
            .finish_watchdog_period(
                period,
                &json!({ "verdicts": findings, "opened": report.opened, "resolved": report.resolved,
                         "s3_list_requests": report.s3_list_requests,
                         "unanswered": report.unanswered }),
            )
            .await?;
        crate::metrics::watchdog_run(crate::metrics::WatchdogRun::Checked);
        let stale = report.verdicts.iter().filter(|v| !v.reasons.is_empty());
        crate::metrics::watchdog_checked(Utc::now().timestamp(), stale.count());
        tracing::info!(%period, opened = report.opened.len(), resolved = report.resolved.len(),
            s3_list_requests = report.s3_list_requests, "watchdog period checked");
        Ok(Some(report))
    }

    /// One Prometheus query for the fleet and one S3 listing per distinct place, then a verdict
    /// per database of every target.
    async fn check(&self, period: DateTime<Utc>) -> Result<PeriodReport, StoreError> {
        let url = &self.settings.prometheus.url;
        let samples = crate::infra::prometheus::query(&self.http, url, LAST_SUCCESS)
            .await
            .map_err(|e| e.to_string());
        let mut report = PeriodReport {
            period,
            verdicts: Vec::new(),
            opened: BTreeMap::new(),
            resolved: BTreeMap::new(),
            s3_list_requests: 0,
            unanswered: BTreeMap::new(),
        };
        if let Err(why) = &samples {
            self.unanswered(&mut report, "prometheus", why);
        }
        // Listings by place, shared by the targets that back up there; each with why it could
        // not read every key, if it could not.
        type Place = Result<(Listing, Option<String>), String>;
        let mut listings: BTreeMap<String, Place> = BTreeMap::new();
        let now = Utc::now();
        for t in &self.targets {
            let ctx = ProbeContext::new(t.settings.clone(), self.kube.clone(), self.http.clone())
                .with_clients(self.clients.clone());
            let listing: Place = match job_s3(&ctx).await {
                Err(e) => Err(Unlisted::from(e).to_string()),
                Ok(job) => {
                    let place = format!(
                        "{}|{}|{}|{}",
                        t.settings.s3.endpoint, job.bucket, job.prefix, job.credentials
                    );
                    if !listings.contains_key(&place) {
                        let listed = crate::runbook::restore::list_every_backup(&job)
                            .await
                            .map(|l| {
                                let cut = job.incomplete(&l);
                                (l, cut)
                            })
                            .map_err(|e| Unlisted::from(e).to_string());
                        report.s3_list_requests += listed.as_ref().map_or(0, |(l, _)| l.pages);
                        listings.insert(place.clone(), listed);
                    }
                    listings[&place].clone()
                }
            };
            let incomplete = listing.as_ref().ok().and_then(|(_, cut)| cut.as_ref());
            if let Some(why) = listing.as_ref().err().or(incomplete) {
                self.unanswered(&mut report, "s3", why);
            }
            let databases = &t.settings.target.databases;
            for db in databases {
                let seen = listing.as_ref().map(|(l, cut)| Listed {
                    newest: l.newest_where(|o| {
                        crate::runbook::restore::database_of(&o.key, databases) == Some(db.as_str())
                    }),
                    incomplete: cut.as_deref(),
                });
                let v = judge(
                    db,
                    seen.map_err(String::as_str),
                    samples.as_deref().map_err(String::as_str),
                    now,
                    t.settings.notify.rpo_hours,
                );
                for r in &v.reasons {
                    crate::metrics::watchdog_finding(r.as_str());
                }
                if !v.reasons.is_empty() {
                    if let Some(id) = self.open(t, &v, period).await? {
                        report.opened.insert(t.key(db), id);
                    }
                } else if v.fresh {
                    if let Some(id) = self.resolve(t, &v).await? {
                        report.resolved.insert(t.key(db), id);
                    }
                }
                report.verdicts.push(v);
            }
        }
        Ok(report)
    }

    /// Records that `source` could not be looked at this period (once per source).
    fn unanswered(&self, report: &mut PeriodReport, source: &str, why: &str) {
        if report.unanswered.contains_key(source) {
            return;
        }
        crate::metrics::watchdog_unanswered(if source == "s3" { "s3" } else { "prometheus" });
        tracing::warn!(source, error = %why, period = %report.period, "the watchdog could not look: a period without findings proves nothing");
        report.unanswered.insert(source.to_owned(), why.to_owned());
    }

    /// Opens the database's incident through the intake, unless an incident about the target's
    /// backups is live (open or escalated): the watchdog's own for this database, or any other
    /// of the target (the alert's, whatever its name). One root cause is one incident and one
    /// page, so the watchdog's evidence goes on that incident's timeline instead.
    async fn open(
        &self,
        t: &Watched,
        v: &Verdict,
        period: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let fp = t.fingerprint(&v.database);
        let live = match self.store.live_incident(&fp).await? {
            Some((id, _)) => Some(id),
            None => self.store.live_backup_incident(&t.name).await?,
        };
        if let Some(id) = live {
            self.add_evidence(id, v, period).await?;
            return Ok(None);
        }
        let reasons: Vec<&str> = v.reasons.iter().map(|r| r.as_str()).collect();
        let mut labels = vec![
            ("alertname", BACKUP_STALE.to_owned()),
            ("severity", "critical".to_owned()),
            ("component", "postgresql-backup".to_owned()),
            ("namespace", t.settings.kubernetes.namespace.clone()),
            ("database", v.database.clone()),
            ("reason", reasons.join(",")),
            ("source", "watchdog".to_owned()),
        ];
        // The target's own match labels, so that intake routes the incident to it.
        own_alert::add_routing(&mut labels, &t.labels);
        let annotations = [
            (
                "summary",
                format!("The backups of {} are stale", v.database),
            ),
            ("description", capitalise(&v.words.join("; "))),
        ];
        let alert = OwnAlert {
            name: BACKUP_STALE,
            receiver: "watchdog",
            fingerprint: &fp,
            starts_at: period,
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
                .append_event(id, Utc::now(), "watchdog_found", &evidence(v, period))
                .await?;
        }
        Ok(id)
    }

    /// Puts the verdict on a live incident's timeline, once per database and reasons (a finding
    /// repeated every period would only re-render the incident's message).
    async fn add_evidence(
        &self,
        incident_id: i64,
        v: &Verdict,
        period: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let reasons = json!(v.reasons);
        let known = self.store.timeline(incident_id).await?.iter().any(|e| {
            e.kind == "watchdog_found"
                && e.detail["database"] == v.database.as_str()
                && e.detail["reasons"] == reasons
        });
        if !known {
            self.store
                .append_event(
                    incident_id,
                    Utc::now(),
                    "watchdog_found",
                    &evidence(v, period),
                )
                .await?;
            tracing::info!(incident_id, database = %v.database,
                "the watchdog's finding joins the live incident instead of opening another");
        }
        Ok(())
    }

    /// Resolves the database's live incident: its backups are fresh again.
    async fn resolve(&self, t: &Watched, v: &Verdict) -> Result<Option<i64>, StoreError> {
        let fp = t.fingerprint(&v.database);
        let labels = [
            ("alertname", BACKUP_STALE.to_owned()),
            ("database", v.database.clone()),
            ("source", "watchdog".to_owned()),
        ];
        own_alert::resolve(
            &self.store,
            &self.intake,
            BACKUP_STALE,
            "watchdog",
            &fp,
            &labels,
        )
        .await
    }
}

/// The `watchdog_found` event of a verdict.
fn evidence(v: &Verdict, period: DateTime<Utc>) -> Value {
    json!({ "database": v.database, "period": period, "reasons": v.reasons,
            "evidence": v.evidence, "words": v.words })
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_aligned_so_every_replica_computes_the_same() {
        let i = Duration::from_secs(15 * 60);
        let a = period_of("2026-11-30T12:07:31Z".parse().unwrap(), i);
        let b = period_of("2026-11-30T12:14:59Z".parse().unwrap(), i);
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-11-30T12:00:00+00:00");
        assert_ne!(a, period_of("2026-11-30T12:15:00Z".parse().unwrap(), i));
    }

    #[test]
    fn the_fingerprint_is_stable_per_database_and_unlike_the_restore_tests() {
        let f = fingerprint("link_users");
        assert_eq!(f.len(), 16);
        assert_eq!(f, fingerprint("link_users"));
        assert_ne!(f, fingerprint("link_chat"));
        assert_ne!(
            f,
            crate::runbook::restore::incident_fingerprint("link_users")
        );
    }
}
