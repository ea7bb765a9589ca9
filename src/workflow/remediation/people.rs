//! The people's side of the remediator: waiting for an approval (which is not a pass: the
//! approved step still goes through the gate) and escalating to on-call.

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use super::{policy_action, Ran, Remediator};
use crate::domain::escalation::{Cause, Rule};
use crate::domain::plan::{Claim, Refusal, Step, StepState, Verdict};
use crate::store::StoreError;

impl Remediator {
    pub(super) async fn escalate(
        &self,
        incident_id: i64,
        claim: &Claim,
        step: &Step,
    ) -> Result<Ran, StoreError> {
        // Only the claim's holder escalates: a process that lost the incident stops here.
        let lease = Duration::from_secs(self.settings.remediation.lease_seconds);
        if !self.store.renew_claim(incident_id, claim, lease).await? {
            return Ok(Ran::Lost);
        }
        let reason = if self.policy.dry_run {
            format!(
                "dry run: the service changed nothing; a person must act on the plan. {}",
                step.reason
            )
        } else {
            step.reason.clone()
        };
        // The flapping breaker planned this step when it tripped, and noted whether an earlier
        // flap of the alert already paged in its window.
        let breaker = self
            .store
            .timeline(incident_id)
            .await?
            .into_iter()
            .rev()
            .find(|e| e.kind == "flapping_breaker");
        let mut cause = match &breaker {
            Some(e) => Cause::new(Rule::Breaker, reason, e.detail.clone()),
            None => Cause::new(Rule::Plan, reason, json!({ "step": step.id })),
        };
        cause.paged_with = breaker
            .as_ref()
            .and_then(|e| e.detail.get("paged_with"))
            .and_then(Value::as_i64);
        let rpo_hours = self.settings.notify.rpo_hours;
        let escalated = self
            .store
            .escalate(incident_id, cause, Utc::now(), rpo_hours)
            .await?;
        let detail = match &escalated {
            Some(e) => {
                crate::metrics::escalation(&self.target, e.scenario_name());
                tracing::warn!(incident_id, scenario = e.scenario_name(), reason = %e.reason,
                    page = e.page, "incident escalated");
                e.detail()
            }
            None => json!({ "reason": "the incident was no longer open" }),
        };
        let from = [StepState::Planned, StepState::Running];
        let done = StepState::Succeeded;
        if !self
            .move_step(step, claim, &from, done, "", Some(&detail), "step_finished")
            .await?
        {
            return Ok(Ran::Lost);
        }
        Ok(Ran::State(StepState::Succeeded))
    }

    pub(super) async fn await_approval(
        &self,
        incident_id: i64,
        claim: &Claim,
        step: &Step,
    ) -> Result<Ran, StoreError> {
        let mut waiting_since = Utc::now();
        if step.state == StepState::Planned {
            let path = format!(
                "/api/v1/incidents/{incident_id}/actions/{}/approve",
                step.id
            );
            let out = json!({ "waiting_since": waiting_since, "approve": path,
                              "reject": path.replace("/approve", "/reject") });
            let from = [StepState::Planned];
            let to = StepState::WaitingApproval;
            if !self
                .move_step(step, claim, &from, to, "", Some(&out), "approval_requested")
                .await?
            {
                return Ok(Ran::Lost);
            }
            tracing::info!(incident_id, step = step.id, action = %step.name, "waiting for an approval");
        } else if let Some(t) = step
            .output
            .get("waiting_since")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
        {
            waiting_since = t;
        }
        let timeout = chrono::Duration::from_std(self.policy.approval_timeout())
            .unwrap_or(chrono::Duration::MAX);
        let Some(current) = self.current(incident_id, step.id).await? else {
            return Ok(Ran::Lost);
        };
        match current.state {
            // An approval is not a pass: the approved step still goes through the gate.
            StepState::Approved => {
                return self
                    .execute(incident_id, claim, &current, Verdict::Run)
                    .await
            }
            StepState::WaitingApproval => {}
            StepState::Planned | StepState::Running => return Ok(Ran::Lost),
            other => return Ok(Ran::State(other)),
        }
        if let Some(stop) = self.stopped(incident_id).await? {
            return Ok(if self.skip(&current, claim, &stop).await? {
                Ran::State(StepState::Skipped)
            } else {
                Ran::Lost
            });
        }
        if Utc::now() - waiting_since > timeout {
            let why = format!(
                "no approval within {} minutes",
                self.policy.approval_timeout_minutes
            );
            let from = [StepState::WaitingApproval];
            let to = StepState::Refused;
            if !self
                .move_step(&current, claim, &from, to, &why, None, "approval_timed_out")
                .await?
            {
                return Ok(Ran::Lost);
            }
            crate::metrics::action_refused(policy_action(step).as_str(), Refusal::Policy.as_str());
            return Ok(Ran::State(StepState::Refused));
        }
        // Still waiting: parked in the store rather than in a task. The engine works the plan
        // again when an approval wakes it (see `waker`), or when its claim lapses.
        Ok(Ran::State(StepState::WaitingApproval))
    }
}
