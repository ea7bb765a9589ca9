//! The gate's side of the remediator: re-probe the precondition, decide the intent, ask the
//! action gate (waiting, bounded, while the target or a running backup Job is busy), act, and
//! record the outcome.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::{policy_action, step_detail, Ran, Remediator, LOCK_WAIT, RETRY};
use crate::actions;
use crate::actions::preconditions::{self, Precondition};
use crate::domain::plan::{
    Claim, GateOutcome, GateRequest, Refusal, Step, StepKind, StepState, Verdict,
};
use crate::store::StoreError;

impl Remediator {
    /// Ends a step the policy in force now does not let run, through the gate.
    pub(super) async fn decide_now(
        &self,
        claim: &Claim,
        step: &Step,
        verdict: Verdict<'_>,
    ) -> Result<Ran, StoreError> {
        self.gate(claim, step, verdict, &json!({}), false)
            .await
            .map(|g| match g {
                GateOutcome::Ended { state, .. } => Ran::State(state),
                // Nothing is locked or budgeted for a step that does not run.
                GateOutcome::Started | GateOutcome::Busy(_) | GateOutcome::Lost(_) => Ran::Lost,
            })
    }

    pub(super) async fn gate(
        &self,
        claim: &Claim,
        step: &Step,
        verdict: Verdict<'_>,
        intent: &Value,
        resume: bool,
    ) -> Result<GateOutcome, StoreError> {
        let action = policy_action(step);
        let (budget, window) = self.policy.budget(action);
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
        let detail = step_detail(step);
        let from: &[StepState] = if resume {
            &[StepState::Running]
        } else {
            &[
                StepState::Planned,
                StepState::WaitingApproval,
                StepState::Approved,
            ]
        };
        let outcome = self
            .store
            .gate(&GateRequest {
                step,
                claim,
                from,
                verdict,
                action,
                counted: matches!(step.kind, StepKind::Action | StepKind::Verify),
                cooldown_seconds: secs(self.policy.cooldown(action)),
                budget: (budget, secs(window)),
                fleet_cap: self.settings.remediation.max_concurrent_actions,
                max_attempts: i64::from(self.policy.max_attempts_per_incident),
                lock_seconds: i64::try_from(self.settings.remediation.job_deadline_seconds + 300)
                    .unwrap_or(i64::MAX / 2),
                intent,
                detail: &detail,
                resume,
            })
            .await?;
        if let GateOutcome::Ended {
            refusal: Some(r),
            reason,
            ..
        } = &outcome
        {
            crate::metrics::action_refused(action.as_str(), r.as_str());
            tracing::warn!(incident_id = step.incident_id, step = step.id, action = action.as_str(), reason = %reason, "the gate refused the step");
        }
        Ok(outcome)
    }

    /// Re-probes the precondition, decides the intent, passes the gate (waiting, bounded, while
    /// the target or a running backup Job is busy), acts, and records the outcome. `policy` is
    /// what the policy in force now says about the step; a new step comes here only when it
    /// allows it, a resumed one (`running`, left by a process that stopped) always, so that the
    /// gate ends it `interrupted` when it may no longer run.
    pub(super) async fn execute(
        &self,
        incident_id: i64,
        claim: &Claim,
        step: &Step,
        policy: Verdict<'_>,
    ) -> Result<Ran, StoreError> {
        let resume = step.state == StepState::Running;
        let end = Instant::now() + LOCK_WAIT;
        let (ctx, intent) = loop {
            // A fresh context each time: the Secret and the world are read again.
            let ctx = self.context(incident_id);
            let checked = if resume && policy != Verdict::Run {
                // The gate ends it on the policy's word; nothing to probe.
                Precondition::Holds(json!({}))
            } else {
                preconditions::check(&ctx, step).await
            };
            let (intent, refused) = match checked {
                // A resumed step keeps its stored intent (applying it again is idempotent).
                Precondition::Holds(_) if resume => (step.output.clone(), None),
                Precondition::Holds(measured) => match actions::prepare(&ctx, step).await {
                    Ok(mut intent) => {
                        intent["precondition"] = measured;
                        (intent, None)
                    }
                    Err(e) => {
                        let why = e.to_string();
                        let from = [
                            StepState::Planned,
                            StepState::WaitingApproval,
                            StepState::Approved,
                        ];
                        let to = StepState::Failed;
                        let moved = self
                            .move_step(step, claim, &from, to, &why, None, "step_failed")
                            .await?;
                        return Ok(if moved { Ran::State(to) } else { Ran::Lost });
                    }
                },
                Precondition::Refuse(why) => (step.output.clone(), Some(why)),
                Precondition::Wait(why) if Instant::now() >= end => (
                    step.output.clone(),
                    Some(format!("{why}; waited {} s", LOCK_WAIT.as_secs())),
                ),
                Precondition::Wait(why) => {
                    tracing::info!(incident_id, step = step.id, reason = %why, "step waits");
                    if let Some(stop) = self.stopped(incident_id).await? {
                        if resume {
                            // The gate ends it `interrupted`, saying the incident is closed.
                            (step.output.clone(), None)
                        } else {
                            let skipped = self.skip(step, claim, &stop).await?;
                            return Ok(if skipped {
                                Ran::State(StepState::Skipped)
                            } else {
                                Ran::Lost
                            });
                        }
                    } else {
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            };
            let verdict = match &refused {
                Some(why) => Verdict::Refuse(Refusal::Precondition, why),
                None => policy,
            };
            match self.gate(claim, step, verdict, &intent, resume).await? {
                GateOutcome::Started => break (ctx, intent),
                GateOutcome::Ended { state, .. } => return Ok(Ran::State(state)),
                GateOutcome::Lost(why) => {
                    tracing::info!(incident_id, step = step.id, reason = %why, "the gate says the step is not ours");
                    return Ok(Ran::Lost);
                }
                // A resumed step leaves the target to its holder for now; a later pass resumes it.
                GateOutcome::Busy(_) if Instant::now() >= end && resume => {
                    return Ok(Ran::State(StepState::Running));
                }
                GateOutcome::Busy(why) if Instant::now() >= end => {
                    let why = format!("{why}; waited {} s", LOCK_WAIT.as_secs());
                    let refused = Verdict::Refuse(Refusal::Lock, &why);
                    return self.decide_now(claim, step, refused).await;
                }
                GateOutcome::Busy(why) => {
                    tracing::info!(incident_id, step = step.id, reason = %why, "target busy; waiting");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        tracing::info!(incident_id, step = step.id, name = %step.name, target = %step.target, "step running");
        let (state, output, reason) = match actions::apply(&ctx, step, &intent).await {
            Ok(out) => (StepState::Succeeded, out, String::new()),
            Err(why) => (
                StepState::Failed,
                json!({ "intent": intent }),
                why.to_string(),
            ),
        };
        crate::metrics::action(&self.target, step.name.as_str(), state.as_str());
        let from = [StepState::Running];
        let moved = self
            .move_step(
                step,
                claim,
                &from,
                state,
                &reason,
                Some(&output),
                "step_finished",
            )
            .await?;
        if step.kind != StepKind::Check {
            let _ = self
                .store
                .unlock_target(&step.target, incident_id, &claim.holder)
                .await;
        }
        Ok(if moved { Ran::State(state) } else { Ran::Lost })
    }
}
