//! The incident: what the service knows about one alert occurrence, and its timeline.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::names::string_enum;

string_enum!(
    /// Where an incident stands.
    #[derive(ToSchema)]
    pub IncidentStatus "incident status" {
        /// The alert fires and the incident is being worked.
        Open => "open",
        /// Alertmanager reported the alert resolved, or a person resolved it.
        Resolved => "resolved",
        /// Handed to people: no safe fix, or the deadline passed.
        Escalated => "escalated",
        /// Fixed by the service and proven by a verified backup.
        Remediated => "remediated",
    }
);

/// An incident as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Incident {
    pub id: i64,
    pub status: IncidentStatus,
    pub alertname: String,
    /// Alertmanager's fingerprint of the alert's label set.
    pub fingerprint: String,
    pub severity: String,
    #[schema(value_type = Object)]
    pub labels: serde_json::Value,
    #[schema(value_type = Object)]
    pub annotations: serde_json::Value,
    /// Link back to the Prometheus expression that fired.
    pub generator_url: String,
    /// When the alert started firing (Alertmanager's startsAt).
    pub starts_at: DateTime<Utc>,
    /// When this service opened the incident.
    pub opened_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Last time Alertmanager sent this alert.
    pub last_seen_at: DateTime<Utc>,
    /// How many times Alertmanager re-sent the alert after the first delivery.
    pub renotified_count: i64,
    /// The configured target (backup stream) the alert was routed to by its labels; `null` when
    /// no target matched (or several did): such an incident is escalated and never acted on.
    pub target: Option<String>,
}

/// What opening an incident needs.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub fingerprint: String,
    pub alertname: String,
    pub starts_at: DateTime<Utc>,
    pub severity: String,
    pub labels: serde_json::Value,
    pub annotations: serde_json::Value,
    pub generator_url: String,
    pub opened_at: DateTime<Utc>,
    /// Detail of the `opened` timeline event.
    pub detail: serde_json::Value,
    /// The target the alert was routed to; `None` when none (or several) matched.
    pub target: Option<String>,
}

/// One entry of an incident's append-only timeline.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TimelineEvent {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// e.g. `opened`, `resolved`; later `probe_started`, `action_started`…
    pub kind: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}
