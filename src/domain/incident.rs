//! The incident: what the service knows about one alert occurrence, and its timeline.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    /// The alert fires and the incident is being worked.
    Open,
    /// Alertmanager reported the alert resolved, or a person resolved it.
    Resolved,
    /// Handed to people: no safe fix, or the deadline passed.
    Escalated,
    /// Fixed by the service and proven by a verified backup.
    Remediated,
}

impl IncidentStatus {
    pub const ALL: [IncidentStatus; 4] = [
        Self::Open,
        Self::Resolved,
        Self::Escalated,
        Self::Remediated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
            Self::Escalated => "escalated",
            Self::Remediated => "remediated",
        }
    }
}

impl fmt::Display for IncidentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IncidentStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?}, expected one of open, resolved, escalated, remediated"
                )
            })
    }
}

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
