//! [`NewIncident`] as intake builds it from an alert, for tests that open incidents through the
//! store: the backup alert, critical, opened now under a fingerprint of its own; each method
//! changes one thing.

use backup_remediator::domain::incident::NewIncident;
use backup_remediator::store::Store;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The builder; [`new_incident`] starts one.
pub struct IncidentBuilder(NewIncident);

/// The backup alert's incident, starting and opened now.
pub fn new_incident() -> IncidentBuilder {
    let now = Utc::now();
    IncidentBuilder(NewIncident {
        fingerprint: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
        alertname: "PostgreSQLBackupFailed".into(),
        starts_at: now,
        severity: "critical".into(),
        labels: json!({ "alertname": "PostgreSQLBackupFailed" }),
        annotations: json!({}),
        generator_url: String::new(),
        opened_at: now,
        detail: json!({}),
        target: Some(DEFAULT_TARGET.to_owned()),
    })
}

/// The target of the default configuration: named after `kubernetes.namespace`.
pub const DEFAULT_TARGET: &str = "link-services";

impl IncidentBuilder {
    pub fn fingerprint(mut self, fingerprint: &str) -> Self {
        self.0.fingerprint = fingerprint.into();
        self
    }

    pub fn alertname(mut self, alertname: &str) -> Self {
        self.0.alertname = alertname.into();
        self
    }

    pub fn severity(mut self, severity: &str) -> Self {
        self.0.severity = severity.into();
        self
    }

    /// When the alert started and when the incident was opened.
    pub fn at(self, at: DateTime<Utc>) -> Self {
        self.starts_at(at).opened_at(at)
    }

    pub fn starts_at(mut self, at: DateTime<Utc>) -> Self {
        self.0.starts_at = at;
        self
    }

    pub fn opened_at(mut self, at: DateTime<Utc>) -> Self {
        self.0.opened_at = at;
        self
    }

    pub fn labels(mut self, labels: Value) -> Self {
        self.0.labels = labels;
        self
    }

    pub fn annotations(mut self, annotations: Value) -> Self {
        self.0.annotations = annotations;
        self
    }

    /// The target the alert was routed to (`None`: no target matched).
    pub fn target(mut self, target: Option<&str>) -> Self {
        self.0.target = target.map(str::to_owned);
        self
    }

    /// The `opened` event's detail (what intake recorded, routing included).
    pub fn detail(mut self, detail: Value) -> Self {
        self.0.detail = detail;
        self
    }

    pub fn generator_url(mut self, url: &str) -> Self {
        self.0.generator_url = url.into();
        self
    }

    /// Opens the incident in `store`; its id.
    pub async fn open(self, store: &Store) -> i64 {
        store.open_incident(&self.0).await.unwrap().id()
    }
}
