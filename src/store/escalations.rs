//! Escalating an incident: one call for every rule (see [`crate::domain::escalation`]), and the
//! look-ups that keep one root cause to one incident and one page.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::escalation::{Cause, Escalation, Rule};
use crate::domain::incident::IncidentStatus;

impl Store {
    /// Hands an open incident to people for `cause`: reads its steps, diagnosis and findings,
    /// and moves it to `escalated` with the one event shape. `None` if it was no longer open.
    pub async fn escalate(
        &self,
        incident_id: i64,
        cause: Cause,
        at: DateTime<Utc>,
        rpo_hours: u64,
    ) -> Result<Option<Escalation>, StoreError> {
        let steps = self.steps(incident_id).await?;
        let diagnosis = self.diagnosis(incident_id).await?;
        let findings = self.findings(incident_id).await?;
        let e = Escalation::new(cause, &steps, diagnosis.as_ref(), &findings, at, rpo_hours);
        let settled = self
            .settle(incident_id, IncidentStatus::Escalated, at, &e.detail())
            .await?;
        Ok(settled.then_some(e))
    }

    /// The incident of alert `fingerprint` (not `incident_id`) whose flapping breaker paged
    /// since `since`: a later flap of the same alert in that window does not page again.
    pub async fn breaker_paged(
        &self,
        fingerprint: &str,
        incident_id: i64,
        since: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let rows = self
            .writer()
            .query(
                "SELECT e.incident_id, e.detail FROM incident_events e \
                 JOIN incidents i ON i.id = e.incident_id \
                 WHERE i.fingerprint = $1 AND i.id <> $2 AND e.kind = 'escalated' AND e.at >= $3 \
                 ORDER BY e.id",
            )
            .bind(fingerprint)
            .bind(incident_id)
            .bind(since)
            .fetch_all()
            .await?;
        for row in &rows {
            let detail: serde_json::Value = row.get("detail")?;
            if detail.get("rule").and_then(|r| r.as_str()) == Some(Rule::Breaker.as_str())
                && crate::domain::escalation::pages(&detail)
            {
                return Ok(Some(row.get("incident_id")?));
            }
        }
        Ok(None)
    }

    /// The newest incident still in people's or the service's hands (open or escalated), of
    /// any alert, of `target`: the one the freshness watchdog adds its evidence to instead of
    /// opening another.
    pub async fn live_backup_incident(&self, target: &str) -> Result<Option<i64>, StoreError> {
        self.writer()
            .query(
                "SELECT id FROM incidents WHERE status IN ('open', 'escalated') AND target = $1 \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(target)
            .fetch_optional_scalar()
            .await
    }
}
