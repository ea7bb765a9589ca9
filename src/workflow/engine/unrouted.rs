//! Incidents whose alert names no configured target, or several: nothing is probed (a probe of
//! the wrong target would be a false claim) and nothing is changed. The diagnosis says so, with
//! the alert's labels and the targets there are; the plan is one escalation.

use chrono::Utc;
use serde_json::json;

use super::{Engine, Report};
use crate::domain::diagnosis::{Diagnosis, Scenario};
use crate::domain::incident::{Incident, IncidentStatus};
use crate::domain::target::Route;
use crate::store::StoreError;

/// Targets named in one summary; the rest are counted (a fleet of 200 would drown the page).
const NAMED: usize = 20;

impl Engine {
    /// Why `incident` has no target, in one paragraph for the person paged.
    fn unrouted_summary(&self, incident: &Incident) -> String {
        let labels: std::collections::BTreeMap<String, String> =
            serde_json::from_value(incident.labels.clone()).unwrap_or_default();
        let routes = self.settings.routes();
        let why = match incident.target.as_deref() {
            Some(gone) => format!("the alert was routed to target {gone:?}, which is no longer configured"),
            None => match routes.route(&labels) {
                Route::Ambiguous(names) => format!(
                    "the alert's labels match several targets ({}); acting on any could be acting on the wrong database",
                    names.join(", ")
                ),
                _ => "no target matched the alert's labels".to_owned(),
            },
        };
        let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let mut targets: Vec<String> = routes
            .targets
            .iter()
            .take(NAMED)
            .map(|(name, m)| format!("{name} ({})", m.describe()))
            .collect();
        if routes.targets.len() > NAMED {
            targets.push(format!("and {} more", routes.targets.len() - NAMED));
        }
        format!(
            "No target: {why}. Alert labels: {}. Configured targets: {}.",
            shown.join(", "),
            targets.join("; ")
        )
    }

    /// Stores the "no target" diagnosis of `incident`: no finding, no probe run.
    pub(super) async fn diagnose_unrouted(
        &self,
        incident: &Incident,
    ) -> Result<Option<Report>, StoreError> {
        let diagnosis = Diagnosis {
            scenario: Scenario::NoTarget,
            confidence: 1.0,
            summary: self.unrouted_summary(incident),
            evidence: Vec::new(),
            also: Vec::new(),
            context: Vec::new(),
        };
        if !self
            .store
            .save_diagnosis(incident.id, &[], &diagnosis, Utc::now())
            .await?
        {
            return Ok(None);
        }
        crate::metrics::diagnosis(crate::metrics::NO_TARGET, Scenario::NoTarget.as_str());
        tracing::warn!(incident_id = incident.id, summary = %diagnosis.summary, "incident routed to no target: escalating, nothing will be probed or changed");
        Ok(Some(Report {
            findings: Vec::new(),
            diagnosis,
        }))
    }

    /// Escalates an unrouted incident directly when no remediator is configured (remediation
    /// off): the page still goes out at once.
    pub(super) async fn settle_unrouted(&self, incident_id: i64) -> Result<(), StoreError> {
        let diagnosis = self.store.diagnosis(incident_id).await?;
        let reason = diagnosis.as_ref().map_or_else(
            || "no target matched the alert".to_owned(),
            |d| d.summary.clone(),
        );
        let detail = json!({ "reason": reason, "scenario": Scenario::NoTarget,
                             "diagnosis": reason, "steps_not_done": [] });
        if self
            .store
            .settle(incident_id, IncidentStatus::Escalated, Utc::now(), &detail)
            .await?
        {
            crate::metrics::escalation(crate::metrics::NO_TARGET, Scenario::NoTarget.as_str());
        }
        Ok(())
    }
}
