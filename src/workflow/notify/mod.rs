//! Telling people: one Slack message per incident kept current, PagerDuty on escalation, and the
//! runbook's deadline (escalate when the backup still fails N hours after the incident opened).
//!
//! Everything goes through an outbox in the store. Each poll the notifier
//! 1. escalates open incidents past the deadline (from the stored `opened_at`, so a restart does
//!    not reset the clock), stating the RPO impact;
//! 2. turns timeline events newer than each incident's cursor into deliveries (a fresh Slack
//!    rendering replaces a pending one, so an outage ends in one up-to-date message), moving the
//!    cursor in the same transaction;
//! 3. sends the due deliveries; a failure (429 with Retry-After, 5xx, `ok: false`, no answer)
//!    leaves the delivery pending with a later attempt time. Remediation never waits for it.
//!
//! Sends and failures are on the incident's timeline (`notification_sent`,
//! `notification_failed`) and counted in `backup_remediator_notifications_total`.

pub mod pagerduty;
mod scrub;
pub mod slack;
pub mod view;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::{NotifySettings, Settings};
use crate::domain::escalation::{Cause, Rpo, Rule};
use crate::domain::incident::IncidentStatus;
use crate::store::{Attempt, Delivery, NewDelivery, Store, StoreError};
use scrub::{scrub_text, scrub_value, secrets_of};
use view::View;

/// Where the notifier reads the time: the system clock, or a test's.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a delivery did not go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again later (429, 5xx, `ok: false`, no answer); `after` is the server's Retry-After.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The Slack message to update is gone: post a new one.
    Gone(String),
    /// The request itself is refused (4xx): retrying cannot help.
    Permanent(String),
}

impl SendError {
    /// A transport error, without the URL (an incoming-webhook URL is a credential).
    pub(crate) fn transport(e: reqwest::Error) -> Self {
        SendError::Retry {
            error: e.without_url().to_string(),
            after: None,
        }
    }

    fn text(&self) -> &str {
        match self {
            SendError::Retry { error, .. }
            | SendError::Gone(error)
            | SendError::Permanent(error) => error,
        }
    }
}

/// How many incidents and deliveries one poll handles at most.
const BATCH: i64 = 50;
/// Closed incidents are watched for new events this long after their last update.
const CLOSED_WINDOW: chrono::Duration = chrono::Duration::days(7);
/// Timeline kinds that make a new webhook message (no bot token: no updates in place).
const MAJOR: [&str; 4] = ["diagnosed", "escalated", "remediated", "resolved"];

/// The notifier: escalation deadline, outbox filling and delivery.
pub struct Notifier {
    store: Store,
    cfg: NotifySettings,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    /// Every configured secret value, scrubbed from whatever is rendered, stored or logged.
    secrets: Vec<String>,
    /// The alerts the deadline applies to (the backup alerts; not, e.g., a failed restore test).
    handled: Vec<String>,
}

impl Notifier {
    /// A notifier for `settings` reading the time from `clock`.
    pub fn new(store: Store, settings: &Settings, clock: Arc<dyn Clock>) -> Self {
        let cfg = settings.notify.clone();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.request_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let secrets = secrets_of(settings);
        Self {
            store,
            cfg,
            clock,
            http,
            secrets,
            handled: {
                let mut names = settings.alerts.handled.clone();
                names.extend(
                    crate::workflow::playbooks::registry()
                        .iter()
                        .flat_map(|p| p.alertnames().iter().map(|n| (*n).to_owned())),
                );
                names.sort();
                names.dedup();
                names
            },
        }
    }

    fn slack_api(&self) -> bool {
        !self.cfg.slack_token.expose_secret().is_empty()
    }

    fn slack_webhook(&self) -> bool {
        !self.slack_api() && !self.cfg.slack_webhook_url.expose_secret().is_empty()
    }

    fn pagerduty(&self) -> bool {
        !self.cfg.pagerduty_routing_key.expose_secret().is_empty()
    }

    /// The configured secrets and every backup Secret value this process has read (the
    /// backup job's database password, encryption key and S3 keys).
    fn all_secrets(&self) -> Vec<String> {
        let mut all = self.secrets.clone();
        all.extend(crate::probes::secret::seen_values());
        all
    }

    fn scrub(&self, s: &str) -> String {
        scrub_text(&self.all_secrets(), s)
    }

    fn scrub_json(&self, v: &mut Value) {
        scrub_value(&self.all_secrets(), v);
    }

    /// Polls every `poll_interval_ms` until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(Duration::from_millis(self.cfg.poll_interval_ms));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = every.tick() => {}
            }
            // A poll in flight is dropped at stop: every store write is its own transaction, and
            // a delivery cut short stays leased, then pending, and goes out after the restart.
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.tick() => {}
            }
        }
    }

    /// One poll: deadline, outbox, deliveries. Failures are logged and retried next poll.
    pub async fn tick(&self) {
        if let Err(e) = self.escalate_overdue().await {
            tracing::warn!(error = %e, "checking the escalation deadline failed");
        }
        if let Err(e) = self.enqueue().await {
            tracing::warn!(error = %e, "queueing notifications failed");
        }
        if let Err(e) = self.deliver().await {
            tracing::warn!(error = %e, "delivering notifications failed");
        }
    }

    /// Escalates open incidents opened more than `escalate_after_hours` ago.
    pub async fn escalate_overdue(&self) -> Result<usize, StoreError> {
        if self.cfg.escalate_after_hours == 0 {
            return Ok(0);
        }
        let now = self.clock.now();
        let hours = i64::try_from(self.cfg.escalate_after_hours).unwrap_or(i64::MAX / 7200);
        let deadline = chrono::Duration::hours(hours);
        let mut escalated = 0;
        let mut overdue = Vec::new();
        for alertname in &self.handled {
            overdue.extend(self.store.overdue(alertname, now - deadline, BATCH).await?);
        }
        for incident in overdue {
            // The RPO in words belongs in the reason people read first.
            let findings = self.store.findings(incident.id).await?;
            let rpo = Rpo::at(view::last_good_backup(&findings), now, self.cfg.rpo_hours);
            let reason = format!(
                "the backup still fails {} h after the incident opened (runbook deadline); RPO impact: {}",
                self.cfg.escalate_after_hours, rpo.rpo_impact
            );
            let context = json!({ "opened_at": incident.opened_at,
                                  "escalate_after_hours": self.cfg.escalate_after_hours });
            // A step still running is not abandoned: the escalation names it, and a fix it
            // proves afterwards makes the incident remediated and resolves the page.
            let cause = Cause::new(Rule::Deadline, reason, context);
            if let Some(e) = self
                .store
                .escalate(incident.id, cause, now, self.cfg.rpo_hours)
                .await?
            {
                escalated += 1;
                crate::metrics::escalation(
                    incident
                        .target
                        .as_deref()
                        .unwrap_or(crate::metrics::NO_TARGET),
                    e.scenario_name(),
                );
                tracing::warn!(
                    incident_id = incident.id,
                    scenario = e.scenario_name(),
                    rpo_impact_seconds = e.rpo.rpo_impact_seconds,
                    still_running = e.still_running.len(),
                    "incident escalated: the escalation deadline passed"
                );
            }
        }
        Ok(escalated)
    }

    /// Turns new timeline events into deliveries. Returns how many incidents moved.
    pub async fn enqueue(&self) -> Result<usize, StoreError> {
        if !(self.slack_api() || self.slack_webhook() || self.pagerduty()) {
            return Ok(0);
        }
        let now = self.clock.now();
        let mut moved = 0;
        for (incident_id, upto) in self
            .store
            .notify_candidates(now - CLOSED_WINDOW, BATCH)
            .await?
        {
            let Some(incident) = self.store.get_incident(incident_id).await? else {
                continue;
            };
            let state = self.store.notify_state(incident_id).await?;
            let timeline = self.store.timeline(incident_id).await?;
            let diagnosis = self.store.diagnosis(incident_id).await?;
            let steps = self.store.steps(incident_id).await?;
            let findings = self.store.findings(incident_id).await?;
            let v = View {
                incident: &incident,
                diagnosis: diagnosis.as_ref(),
                steps: &steps,
                timeline: &timeline,
                last_good_backup: view::last_good_backup(&findings),
                now,
                external_url: &self.cfg.external_url,
                rpo_hours: self.cfg.rpo_hours,
                buttons: !self.cfg.slack_approvers.is_empty()
                    || !self.cfg.slack_approvers_file.is_empty(),
            };
            let new_kinds: Vec<&str> = timeline
                .iter()
                .filter(|e| e.id > state.last_event_id && e.id <= upto)
                .map(|e| e.kind.as_str())
                .collect();
            let mut deliveries = Vec::new();
            let mut message = slack::render(&v);
            self.scrub_json(&mut message);
            if self.slack_api() {
                deliveries.push(NewDelivery {
                    channel: "slack".into(),
                    kind: "slack_api".into(),
                    payload: message,
                });
            } else if self.slack_webhook() && new_kinds.iter().any(|k| MAJOR.contains(k)) {
                deliveries.push(NewDelivery {
                    channel: "slack".into(),
                    kind: "slack_webhook".into(),
                    payload: message,
                });
            }
            let mut pd = state.pagerduty.clone();
            if self.pagerduty() {
                if pd.is_empty() && incident.status == IncidentStatus::Escalated && v.pages() {
                    let mut event = pagerduty::trigger(&v);
                    self.scrub_json(&mut event);
                    deliveries.push(NewDelivery {
                        channel: "pagerduty".into(),
                        kind: "trigger".into(),
                        payload: event,
                    });
                    pd = "triggered".into();
                }
                if pd == "triggered"
                    && matches!(
                        incident.status,
                        IncidentStatus::Remediated | IncidentStatus::Resolved
                    )
                {
                    deliveries.push(NewDelivery {
                        channel: "pagerduty".into(),
                        kind: "resolve".into(),
                        payload: pagerduty::resolve(incident.target.as_deref(), incident_id),
                    });
                    pd = "resolved".into();
                }
            }
            if self
                .store
                .enqueue_notifications(
                    incident_id,
                    state.last_event_id,
                    upto,
                    &pd,
                    &deliveries,
                    now,
                )
                .await?
            {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Sends the due deliveries. Returns how many went out.
    pub async fn deliver(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let lease = chrono::Duration::milliseconds(
            i64::try_from(self.cfg.request_timeout_ms).unwrap_or(60_000) + 30_000,
        );
        let mut sent = 0;
        for d in self.store.due_deliveries(now, BATCH).await? {
            if !self.store.lease_delivery(&d, now + lease).await? {
                continue;
            }
            if self.deliver_one(&d).await? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn deliver_one(&self, d: &Delivery) -> Result<bool, StoreError> {
        let channel: &'static str = if d.channel == "slack" {
            "slack"
        } else {
            "pagerduty"
        };
        if d.attempts > 0 {
            crate::metrics::notification(channel, crate::metrics::NotificationOutcome::Retried);
        }
        let state = self.store.notify_state(d.incident_id).await?;
        let result = match d.kind.as_str() {
            "slack_api" => slack::send_api(
                &self.http,
                &self.cfg.slack_api_url,
                self.cfg.slack_token.expose_secret(),
                &self.cfg.slack_channel,
                state.slack.as_ref(),
                &d.payload,
            )
            .await
            .map(Some),
            "slack_webhook" => slack::send_webhook(
                &self.http,
                self.cfg.slack_webhook_url.expose_secret(),
                &d.payload,
            )
            .await
            .map(|()| None),
            _ => pagerduty::send(
                &self.http,
                &self.cfg.pagerduty_url,
                self.cfg.pagerduty_routing_key.expose_secret(),
                &d.payload,
            )
            .await
            .map(|()| None),
        };
        let now = self.clock.now();
        let attempt = d.attempts + 1;
        match result {
            Ok(message) => {
                let method = match (d.kind.as_str(), &state.slack) {
                    ("slack_api", Some(_)) => "chat.update",
                    ("slack_api", None) => "chat.postMessage",
                    (k, _) => k,
                };
                let detail = json!({ "channel": channel, "kind": d.kind, "method": method,
                                     "delivery": d.id, "attempt": attempt });
                let slack = message.as_ref().map(|(c, t)| (c.as_str(), t.as_str()));
                self.store
                    .record_attempt(d, &Attempt::Sent { slack }, now, &detail)
                    .await?;
                crate::metrics::notification(channel, crate::metrics::NotificationOutcome::Sent);
                tracing::info!(
                    incident_id = d.incident_id,
                    channel,
                    method,
                    attempt,
                    "notification sent"
                );
                Ok(true)
            }
            Err(e) => {
                let error = self.scrub(e.text());
                let retry_at = match &e {
                    SendError::Permanent(_) => None,
                    SendError::Gone(_) => {
                        self.store.forget_slack_message(d.incident_id).await?;
                        Some(now)
                    }
                    SendError::Retry { after, .. } => {
                        let exp = 1u64 << u32::try_from(d.attempts).unwrap_or(16).min(16);
                        let wait = exp
                            .min(self.cfg.max_backoff_seconds)
                            .max(after.map_or(0, |a| a.as_secs()));
                        Some(now + chrono::Duration::seconds(i64::try_from(wait).unwrap_or(300)))
                    }
                };
                let detail = json!({ "channel": channel, "kind": d.kind, "delivery": d.id,
                                     "attempt": attempt, "error": error, "retry_at": retry_at,
                                     "gave_up": retry_at.is_none() });
                let failed = Attempt::Failed {
                    retry_at,
                    error: &error,
                };
                self.store.record_attempt(d, &failed, now, &detail).await?;
                crate::metrics::notification(channel, crate::metrics::NotificationOutcome::Failed);
                tracing::warn!(incident_id = d.incident_id, channel, attempt, error = %error,
                    retry_at = ?retry_at, "notification failed");
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_backup_secrets_values_are_scrubbed_once_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("n.sqlite").display());
        let opts = crate::store::StoreOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
        };
        let store = Store::connect(&url, dir.path(), &opts).await.unwrap();
        let settings = Settings::from_toml("").unwrap();
        let notifier = Notifier::new(store, &settings, Arc::new(SystemClock));
        let leaked = "pg_dump: password authentication failed, password was notifier-canary-7f2";
        assert_eq!(notifier.scrub(leaked), leaked, "not read yet");
        crate::probes::secret::remember(&crate::probes::secret::BackupSecret {
            postgres_password: Some("notifier-canary-7f2".to_owned().into()),
            ..Default::default()
        });
        let mut v = json!({ "detail": leaked });
        notifier.scrub_json(&mut v);
        assert_eq!(
            v["detail"],
            "pg_dump: password authentication failed, password was [redacted]"
        );
    }
}
