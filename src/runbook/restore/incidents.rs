//! How restore test results become incidents: the failed tests of one database share one
//! `PostgreSQLBackupNotRestorable` incident (escalated once, through the one escalation call,
//! so it pages once); the next passing test of that database resolves it.

use chrono::Utc;
use serde_json::json;

use super::{incident_fingerprint, RestoreTest, RestoreTester, TestResult, NOT_RESTORABLE_ALERT};
use crate::domain::escalation::{Cause, Rule};
use crate::domain::incident::NewIncident;
use crate::store::StoreError;

impl RestoreTester {
    /// The incident of a failed test: the database's live one, with this test's failure on its
    /// timeline, or a new one, escalated at once (no playbook fixes a backup that does not
    /// restore).
    pub(super) async fn incident_of_failure(
        &self,
        t: &RestoreTest,
        outcome: &TestResult,
    ) -> Result<i64, StoreError> {
        let reason = outcome.reason.clone().unwrap_or_default();
        let object = outcome
            .object_key
            .clone()
            .or_else(|| t.result.object_key.clone());
        let now = Utc::now();
        let fingerprint = incident_fingerprint(&t.database);
        let failed = json!({ "restore_test_id": t.id, "database": t.database, "object": object,
                             "reason": reason, "scratch_database": t.scratch_database,
                             "checks": outcome.checks, "rto": outcome.rto });
        if let Some((id, _)) = self.store.live_incident(&fingerprint).await? {
            self.store
                .append_event(id, now, "restore_test_failed", &failed)
                .await?;
            return Ok(id);
        }
        let opened = self
            .store
            .open_incident(&NewIncident {
                fingerprint,
                alertname: NOT_RESTORABLE_ALERT.to_owned(),
                starts_at: t.started_at,
                severity: "critical".to_owned(),
                labels: json!({ "alertname": NOT_RESTORABLE_ALERT, "severity": "critical",
                                "database": t.database, "source": "restore-test" }),
                annotations: json!({
                    "summary": format!("The newest backup of {} could not be restored", t.database),
                    "description": reason,
                }),
                generator_url: String::new(),
                opened_at: now,
                detail: json!({ "source": "restore_test", "restore_test_id": t.id,
                                "database": t.database, "object": object }),
                target: Some(self.target.clone()),
            })
            .await?;
        self.store
            .append_event(opened.id(), now, "restore_test_failed", &failed)
            .await?;
        let cause = Cause::new(
            Rule::RestoreTest,
            format!(
                "the newest backup of {} failed its restore test: {reason}",
                t.database
            ),
            json!({ "restore_test_id": t.id, "object": object }),
        );
        let rpo_hours = self.settings.notify.rpo_hours;
        if let Some(e) = self
            .store
            .escalate(opened.id(), cause, Utc::now(), rpo_hours)
            .await?
        {
            crate::metrics::escalation(&self.target, "not_restorable");
            tracing::warn!(incident_id = opened.id(), database = %t.database, reason = %e.reason,
                "restore test failed: incident escalated");
        }
        Ok(opened.id())
    }

    /// A passing test resolves its database's live incident: the backups restore again.
    pub(super) async fn resolve_incident(
        &self,
        t: &RestoreTest,
        outcome: &TestResult,
    ) -> Result<(), StoreError> {
        let fingerprint = incident_fingerprint(&t.database);
        let Some((id, starts_at)) = self.store.live_incident(&fingerprint).await? else {
            return Ok(());
        };
        let detail = json!({ "reason": format!("restore test {} of {} passed", t.id, t.database),
                             "restore_test_id": t.id, "object": outcome.object_key });
        self.store
            .resolve_by_alert(&fingerprint, starts_at, Utc::now(), &detail)
            .await?;
        tracing::info!(
            incident_id = id,
            database = %t.database,
            "restore test passed: incident resolved"
        );
        Ok(())
    }
}
