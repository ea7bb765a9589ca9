//! Every metric the service exports, in one place: its name, kind, unit, help text and labels
//! ([`ALL`], which the exporter describes at start-up), and one typed recorder per metric that
//! the rest of the code calls. No other file spells a `backup_remediator_*` name: the dashboard,
//! the PrometheusRule and the book's Metrics section are checked against this file (tests/deploy).
//!
//! Label values that belong to a fixed set only this metric uses are enums here; those that are
//! the name of a domain value (a scenario, an action, a probe, a status) come in as that value's
//! `as_str()`. Imports nothing else of the crate.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use ::metrics::{Counter, Gauge, Histogram, KeyName, SharedString, Unit};

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric: what the exporter's `# HELP` line and a reader of the dashboard need.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The exported name, byte for byte.
    pub name: &'static str,
    pub kind: Kind,
    /// The unit, when it has one (the exporter does not append it to the name).
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// The label names, in the order the recorder passes them.
    pub labels: &'static [&'static str],
}

const fn counter(
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        unit: Some(Unit::Count),
        help,
        labels,
    }
}

pub const WEBHOOK_REQUESTS: Metric = counter(
    "backup_remediator_webhook_requests_total",
    "Alertmanager webhook requests by outcome.",
    &["outcome"],
);
pub const ALERTS: Metric = counter(
    "backup_remediator_alerts_total",
    "Alerts received on the webhook by what intake did with them.",
    &["outcome"],
);
pub const ALERTS_IGNORED: Metric = counter(
    "backup_remediator_alerts_ignored_total",
    "Alerts ignored because the service does not handle their name (bounded: other).",
    &["alertname"],
);
pub const ALERTS_UNMATCHED: Metric = counter(
    "backup_remediator_alerts_unmatched_total",
    "Alerts whose labels matched no configured target, or several: stored and escalated, never acted on.",
    &[],
);
pub const INCIDENTS_OPENED: Metric = counter(
    "backup_remediator_incidents_opened_total",
    "Incidents opened.",
    &[],
);
pub const INCIDENTS_DEDUPLICATED: Metric = counter(
    "backup_remediator_incidents_deduplicated_total",
    "Alerts that joined an incident already open.",
    &[],
);
pub const INCIDENTS_RESOLVED: Metric = counter(
    "backup_remediator_incidents_resolved_total",
    "Incidents resolved by a resolved alert.",
    &[],
);
pub const HTTP_CONNECTIONS_OPEN: Metric = Metric {
    name: "backup_remediator_http_connections_open",
    kind: Kind::Gauge,
    unit: Some(Unit::Count),
    help: "HTTP connections open now.",
    labels: &[],
};
pub const HTTP_CONNECTIONS_CLOSED: Metric = counter(
    "backup_remediator_http_connections_closed_total",
    "Connections the server closed on a slow or silent client.",
    &["reason"],
);
pub const HTTP_REQUEST_DURATION: Metric = Metric {
    name: "backup_remediator_http_request_duration_seconds",
    kind: Kind::Histogram,
    unit: Some(Unit::Seconds),
    help: "HTTP request latency by method, route template and status.",
    labels: &["method", "route", "status"],
};
pub const DIAGNOSES: Metric = counter(
    "backup_remediator_diagnoses_total",
    "Diagnoses made, by target and scenario.",
    &["target", "scenario"],
);
pub const ACTIONS: Metric = counter(
    "backup_remediator_actions_total",
    "Remediation actions run, by target, action and outcome.",
    &["target", "action", "outcome"],
);
pub const ACTIONS_REFUSED: Metric = counter(
    "backup_remediator_actions_refused_total",
    "Remediation actions the gate refused, by action and reason.",
    &["action", "reason"],
);
pub const REMEDIATIONS: Metric = counter(
    "backup_remediator_remediations_total",
    "Incidents remediated and verified, by target.",
    &["target"],
);
pub const ESCALATIONS: Metric = counter(
    "backup_remediator_escalations_total",
    "Incidents escalated to people, by target and scenario.",
    &["target", "scenario"],
);
pub const APPROVALS: Metric = counter(
    "backup_remediator_approvals_total",
    "Approval decisions on remediation steps.",
    &["decision"],
);
pub const FLAPPING_BREAKS: Metric = counter(
    "backup_remediator_flapping_breaks_total",
    "Incidents escalated instead of remediated because the alert flaps.",
    &[],
);
pub const AUTH_RELOADS: Metric = counter(
    "backup_remediator_auth_reloads_total",
    "Credential reloads by outcome and trigger.",
    &["outcome", "trigger"],
);
pub const NOTIFICATIONS: Metric = counter(
    "backup_remediator_notifications_total",
    "Notification deliveries by channel and outcome.",
    &["channel", "outcome"],
);
pub const SLACK_INTERACTIONS: Metric = counter(
    "backup_remediator_slack_interactions_total",
    "Slack button clicks by outcome.",
    &["outcome"],
);
pub const PROBE_DURATION: Metric = Metric {
    name: "backup_remediator_probe_duration_seconds",
    kind: Kind::Histogram,
    unit: Some(Unit::Seconds),
    help: "How long each probe took.",
    labels: &["probe"],
};
pub const PROBE_RESULTS: Metric = counter(
    "backup_remediator_probe_results_total",
    "Probe results by probe and status.",
    &["probe", "status"],
);
pub const WATCHDOG_RUNS: Metric = counter(
    "backup_remediator_watchdog_runs_total",
    "Freshness watchdog periods by outcome.",
    &["outcome"],
);
pub const WATCHDOG_LAST_RUN: Metric = Metric {
    name: "backup_remediator_watchdog_last_run_timestamp_seconds",
    kind: Kind::Gauge,
    unit: Some(Unit::Seconds),
    help: "When the freshness watchdog last checked a period (Unix time).",
    labels: &[],
};
pub const WATCHDOG_STALE_DATABASES: Metric = Metric {
    name: "backup_remediator_watchdog_stale_databases",
    kind: Kind::Gauge,
    unit: Some(Unit::Count),
    help: "Databases the watchdog found without a fresh backup in its last period.",
    labels: &[],
};
pub const WATCHDOG_UNANSWERED: Metric = counter(
    "backup_remediator_watchdog_unanswered_total",
    "Watchdog periods in which a source did not answer.",
    &["source"],
);
pub const WATCHDOG_FINDINGS: Metric = counter(
    "backup_remediator_watchdog_findings_total",
    "Databases the watchdog found wanting, by reason.",
    &["reason"],
);
pub const RESTORE_TESTS: Metric = counter(
    "backup_remediator_restore_tests_total",
    "Restore tests finished, by status.",
    &["status"],
);
pub const MANUAL_BACKUPS: Metric = counter(
    "backup_remediator_manual_backups_total",
    "Manual backups finished, by status.",
    &["status"],
);

/// Every metric the service exports.
pub const ALL: &[Metric] = &[
    WEBHOOK_REQUESTS,
    ALERTS,
    ALERTS_IGNORED,
    ALERTS_UNMATCHED,
    INCIDENTS_OPENED,
    INCIDENTS_DEDUPLICATED,
    INCIDENTS_RESOLVED,
    HTTP_CONNECTIONS_OPEN,
    HTTP_CONNECTIONS_CLOSED,
    HTTP_REQUEST_DURATION,
    DIAGNOSES,
    ACTIONS,
    ACTIONS_REFUSED,
    REMEDIATIONS,
    ESCALATIONS,
    APPROVALS,
    FLAPPING_BREAKS,
    AUTH_RELOADS,
    NOTIFICATIONS,
    SLACK_INTERACTIONS,
    PROBE_DURATION,
    PROBE_RESULTS,
    WATCHDOG_RUNS,
    WATCHDOG_LAST_RUN,
    WATCHDOG_STALE_DATABASES,
    WATCHDOG_UNANSWERED,
    WATCHDOG_FINDINGS,
    RESTORE_TESTS,
    MANUAL_BACKUPS,
];

/// Gives the installed recorder every metric's help text and unit (its `# HELP` lines).
pub fn describe_all() {
    ::metrics::with_recorder(|r| {
        for m in ALL {
            let name = KeyName::from_const_str(m.name);
            let help = SharedString::const_str(m.help);
            match m.kind {
                Kind::Counter => r.describe_counter(name, m.unit, help),
                Kind::Gauge => r.describe_gauge(name, m.unit, help),
                Kind::Histogram => r.describe_histogram(name, m.unit, help),
            }
        }
    });
}

/// A counter with fixed labels, registered once and then only incremented: no registry lookup
/// per event on the hot paths (webhook, intake). The recorder is installed before the server
/// starts, so the cached handle is the real one.
macro_rules! cached_counter {
    ($metric:expr $(, $k:literal => $v:expr)* $(,)?) => {{
        static COUNTER: OnceLock<Counter> = OnceLock::new();
        COUNTER.get_or_init(|| ::metrics::counter!($metric.name $(, $k => $v)*))
    }};
}

/// Declares a label enum: its variants and the exact label value each exports.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $value:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }
        impl $name {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $value),+ }
            }
        }
    };
}

label_enum!(
    /// `outcome` of [`WEBHOOK_REQUESTS`].
    WebhookOutcome {
        Accepted => "accepted",
        Unauthorized => "unauthorized",
        BadRequest => "bad_request",
        PayloadTooLarge => "payload_too_large",
        StoreUnavailable => "store_unavailable",
        Error => "error",
    }
);
label_enum!(
    /// `outcome` of [`ALERTS`].
    AlertOutcome {
        Opened => "opened",
        Renotified => "renotified",
        Resolved => "resolved",
        AlreadyResolved => "already_resolved",
        ResolvedUnknown => "resolved_unknown",
        Ignored => "ignored",
        Failed => "failed",
    }
);
label_enum!(
    /// `reason` of [`HTTP_CONNECTIONS_CLOSED`].
    ClosedReason {
        HeaderTimeout => "header_timeout",
        IdleTimeout => "idle_timeout",
        BodyTimeout => "body_timeout",
    }
);
label_enum!(
    /// `outcome` of [`AUTH_RELOADS`].
    ReloadOutcome { Ok => "ok", Error => "error" }
);
label_enum!(
    /// `outcome` of [`NOTIFICATIONS`].
    NotificationOutcome { Sent => "sent", Retried => "retried", Failed => "failed" }
);
label_enum!(
    /// `outcome` of [`SLACK_INTERACTIONS`].
    SlackOutcome {
        Unsigned => "unsigned",
        Refused => "refused",
        Decided => "decided",
        Conflict => "conflict",
    }
);
label_enum!(
    /// `outcome` of [`WATCHDOG_RUNS`].
    WatchdogRun { Checked => "checked", Taken => "taken", Error => "error" }
);

/// One webhook request answered with `outcome`.
pub fn webhook_request(outcome: WebhookOutcome) {
    use WebhookOutcome as O;
    let m = WEBHOOK_REQUESTS;
    match outcome {
        O::Accepted => cached_counter!(m, "outcome" => O::Accepted.as_str()),
        O::Unauthorized => cached_counter!(m, "outcome" => O::Unauthorized.as_str()),
        O::BadRequest => cached_counter!(m, "outcome" => O::BadRequest.as_str()),
        O::PayloadTooLarge => cached_counter!(m, "outcome" => O::PayloadTooLarge.as_str()),
        O::StoreUnavailable => cached_counter!(m, "outcome" => O::StoreUnavailable.as_str()),
        O::Error => cached_counter!(m, "outcome" => O::Error.as_str()),
    }
    .increment(1);
}

/// One alert that intake handled with `outcome`.
pub fn alert(outcome: AlertOutcome) {
    use AlertOutcome as O;
    let m = ALERTS;
    match outcome {
        O::Opened => cached_counter!(m, "outcome" => O::Opened.as_str()),
        O::Renotified => cached_counter!(m, "outcome" => O::Renotified.as_str()),
        O::Resolved => cached_counter!(m, "outcome" => O::Resolved.as_str()),
        O::AlreadyResolved => cached_counter!(m, "outcome" => O::AlreadyResolved.as_str()),
        O::ResolvedUnknown => cached_counter!(m, "outcome" => O::ResolvedUnknown.as_str()),
        O::Ignored => cached_counter!(m, "outcome" => O::Ignored.as_str()),
        O::Failed => cached_counter!(m, "outcome" => O::Failed.as_str()),
    }
    .increment(1);
}

/// The counter of [`ALERTS_IGNORED`], at most `cap` named series plus `other`.
pub const fn alerts_ignored(cap: usize) -> BoundedCounter {
    BoundedCounter::new(ALERTS_IGNORED.name, "alertname", cap)
}

/// One alert whose labels matched no single target.
pub fn alert_unmatched() {
    cached_counter!(ALERTS_UNMATCHED).increment(1);
}

/// The `target` label of an incident that was routed to no target.
pub const NO_TARGET: &str = "none";

/// One incident opened.
pub fn incident_opened() {
    cached_counter!(INCIDENTS_OPENED).increment(1);
}

/// One alert joined an open incident.
pub fn incident_deduplicated() {
    cached_counter!(INCIDENTS_DEDUPLICATED).increment(1);
}

/// One incident resolved by its alert.
pub fn incident_resolved() {
    cached_counter!(INCIDENTS_RESOLVED).increment(1);
}

/// The gauge of open HTTP connections.
pub fn http_connections_open() -> Gauge {
    ::metrics::gauge!(HTTP_CONNECTIONS_OPEN.name)
}

/// One connection the server closed for `reason`.
pub fn http_connection_closed(reason: ClosedReason) {
    use ClosedReason as R;
    let m = HTTP_CONNECTIONS_CLOSED;
    match reason {
        R::HeaderTimeout => cached_counter!(m, "reason" => R::HeaderTimeout.as_str()),
        R::IdleTimeout => cached_counter!(m, "reason" => R::IdleTimeout.as_str()),
        R::BodyTimeout => cached_counter!(m, "reason" => R::BodyTimeout.as_str()),
    }
    .increment(1);
}

/// The latency histogram of one (method, route template, status); the caller caches it.
pub fn http_request_duration(method: &'static str, route: &str, status: u16) -> Histogram {
    let labels = [
        ("method", method.to_string()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    ::metrics::histogram!(HTTP_REQUEST_DURATION.name, &labels)
}

/// One diagnosis of `target` (a configured name, so the series are bounded) naming `scenario`.
pub fn diagnosis(target: &str, scenario: &'static str) {
    ::metrics::counter!(DIAGNOSES.name, "target" => target.to_owned(), "scenario" => scenario)
        .increment(1);
}

/// One action on `target` run to `outcome` (a step state).
pub fn action(target: &str, action: &str, outcome: &'static str) {
    ::metrics::counter!(ACTIONS.name, "target" => target.to_owned(),
        "action" => action.to_owned(), "outcome" => outcome)
    .increment(1);
}

/// One action the gate refused for `reason` (a refusal).
pub fn action_refused(action: &str, reason: &'static str) {
    ::metrics::counter!(ACTIONS_REFUSED.name, "action" => action.to_owned(), "reason" => reason)
        .increment(1);
}

/// One incident of `target` remediated and verified.
pub fn remediation(target: &str) {
    ::metrics::counter!(REMEDIATIONS.name, "target" => target.to_owned()).increment(1);
}

/// One incident of `target` (or [`NO_TARGET`]) escalated, diagnosed as `scenario` (or `unknown`).
pub fn escalation(target: &str, scenario: &'static str) {
    ::metrics::counter!(ESCALATIONS.name, "target" => target.to_owned(), "scenario" => scenario)
        .increment(1);
}

/// One approval decision (`approved`, `rejected`).
pub fn approval(decision: &'static str) {
    ::metrics::counter!(APPROVALS.name, "decision" => decision).increment(1);
}

/// One incident escalated because its alert flaps.
pub fn flapping_break() {
    ::metrics::counter!(FLAPPING_BREAKS.name).increment(1);
}

/// One credential reload to `outcome`, started by `trigger`.
pub fn auth_reload(outcome: ReloadOutcome, trigger: &'static str) {
    ::metrics::counter!(AUTH_RELOADS.name, "outcome" => outcome.as_str(), "trigger" => trigger)
        .increment(1);
}

/// One notification on `channel` that ended in `outcome`.
pub fn notification(channel: &'static str, outcome: NotificationOutcome) {
    ::metrics::counter!(NOTIFICATIONS.name, "channel" => channel, "outcome" => outcome.as_str())
        .increment(1);
}

/// One Slack button click that ended in `outcome`.
pub fn slack_interaction(outcome: SlackOutcome) {
    ::metrics::counter!(SLACK_INTERACTIONS.name, "outcome" => outcome.as_str()).increment(1);
}

/// One probe run: how long it took and the status of its finding.
pub fn probe_run(probe: &'static str, seconds: f64, status: &'static str) {
    ::metrics::histogram!(PROBE_DURATION.name, "probe" => probe).record(seconds);
    ::metrics::counter!(PROBE_RESULTS.name, "probe" => probe, "status" => status).increment(1);
}

/// One watchdog period that ended in `outcome`.
pub fn watchdog_run(outcome: WatchdogRun) {
    ::metrics::counter!(WATCHDOG_RUNS.name, "outcome" => outcome.as_str()).increment(1);
}

/// The watchdog checked a period at `unix_seconds`, finding `stale` databases.
pub fn watchdog_checked(unix_seconds: i64, stale: usize) {
    ::metrics::gauge!(WATCHDOG_LAST_RUN.name).set(unix_seconds as f64);
    ::metrics::gauge!(WATCHDOG_STALE_DATABASES.name).set(stale as f64);
}

/// A source (`s3`, `prometheus`) the watchdog could not look at this period.
pub fn watchdog_unanswered(source: &'static str) {
    ::metrics::counter!(WATCHDOG_UNANSWERED.name, "source" => source).increment(1);
}

/// One database the watchdog found wanting for `reason`.
pub fn watchdog_finding(reason: &'static str) {
    ::metrics::counter!(WATCHDOG_FINDINGS.name, "reason" => reason).increment(1);
}

/// One restore test finished with `status`.
pub fn restore_test(status: &'static str) {
    ::metrics::counter!(RESTORE_TESTS.name, "status" => status).increment(1);
}

/// One manual backup finished with `status`.
pub fn manual_backup(status: &'static str) {
    ::metrics::counter!(MANUAL_BACKUPS.name, "status" => status).increment(1);
}

/// A counter whose label value comes from outside (an alert name a sender chose), kept bounded:
/// the first `cap` distinct values that are plain names (`[A-Za-z0-9_:.-]`, at most 64 bytes)
/// get a series each; every other value, and every value after those, counts as `other`. One
/// per service (the intake owns it), so a running service has at most `cap + 1` series.
pub struct BoundedCounter {
    name: &'static str,
    label: &'static str,
    cap: usize,
    series: Mutex<BTreeMap<String, Counter>>,
}

/// The label value of everything beyond a [`BoundedCounter`]'s bound.
pub const OTHER: &str = "other";

impl BoundedCounter {
    /// A counter `name{label=…}` with at most `cap` named series plus `other`.
    const fn new(name: &'static str, label: &'static str, cap: usize) -> Self {
        Self {
            name,
            label,
            cap,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one event for `value` (or `other`).
    pub fn count(&self, value: &str) {
        let mut series = self
            .series
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = series.get(value) {
            c.increment(1);
            return;
        }
        let label = if plain_label(value) && series.len() < self.cap {
            value
        } else {
            OTHER
        };
        let counter = series
            .entry(label.to_owned())
            .or_insert_with(|| ::metrics::counter!(self.name, self.label => label.to_owned()));
        counter.increment(1);
    }
}

/// A value that needs no escaping anywhere in the exposition format and reads as a name.
pub fn plain_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_once_under_the_services_prefix() {
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a metric is listed twice");
        for m in ALL {
            assert!(m.name.starts_with("backup_remediator_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty(), "{} has no help text", m.name);
        }
    }
}
