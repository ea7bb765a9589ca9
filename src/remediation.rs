//! Works an incident's plan: plans it from the diagnosis (stored before anything runs), then
//! runs each step as the policy decided — waiting for approvals, refusing what policy refuses,
//! holding a lock on each target, recording every start and outcome on the timeline before and
//! after acting — until a verified backup makes the incident `remediated`, or the plan ends in
//! escalation. A step found `running` (the process died in it) is resumed from its stored
//! intent, which is idempotent, never started afresh.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::actions::{self, ActionContext};
use crate::config::Settings;
use crate::incident::IncidentStatus;
use crate::plan::{Decision, Step, StepKind, StepState, Transition};
use crate::playbooks::{self, PlanInput};
use crate::policy::Policy;
use crate::probes::ProbeContext;
use crate::store::{Store, StoreError};

/// How long a step waits for a target another incident holds before it is refused.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Runs plans. One per process; shared by the engine and the approval API (for wake-ups).
pub struct Remediator {
    store: Store,
    settings: Arc<Settings>,
    policy: Arc<Policy>,
    kube: Option<kube::Client>,
    holder: String,
    wake: Arc<Notify>,
}

/// How working the plan ended for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more to do (remediated, escalated, resolved, no playbook).
    Done,
    /// Interrupted (shutdown, lost claim): another pass continues.
    Paused,
}

impl Remediator {
    pub fn new(
        store: Store,
        settings: Arc<Settings>,
        policy: Arc<Policy>,
        kube: Option<kube::Client>,
        holder: String,
    ) -> Self {
        Self {
            store,
            settings,
            policy,
            kube,
            holder,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes the plans parked for an approval (the API calls it after recording one; the engine
    /// listens).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Plans the incident if it has no plan yet, then works the plan.
    pub async fn remediate(&self, incident_id: i64) -> Result<Outcome, StoreError> {
        let mut steps = self.store.steps(incident_id).await?;
        if steps.is_empty() {
            if !self.make_plan(incident_id).await? {
                return Ok(Outcome::Done);
            }
            steps = self.store.steps(incident_id).await?;
        }
        self.work(incident_id, steps).await
    }

    async fn make_plan(&self, incident_id: i64) -> Result<bool, StoreError> {
        let Some(incident) = self.store.get_incident(incident_id).await? else {
            return Ok(false);
        };
        let Some(diagnosis) = self.store.diagnosis(incident_id).await? else {
            return Ok(false);
        };
        let findings = self.store.findings(incident_id).await?;
        let planned = {
            let input = PlanInput {
                diagnosis: &diagnosis,
                findings: &findings,
                settings: &self.settings,
            };
            playbooks::plan(&incident.alertname, &input, &self.policy)
        };
        let Some(steps) = planned else {
            self.store
                .append_event(
                    incident_id,
                    Utc::now(),
                    "no_playbook",
                    &json!({ "alertname": incident.alertname, "scenario": diagnosis.scenario }),
                )
                .await?;
            return Ok(false);
        };
        let detail = json!({
            "scenario": diagnosis.scenario,
            "policy": self.policy.source,
            "dry_run": self.policy.dry_run,
            "steps": steps,
        });
        self.store
            .save_plan(incident_id, &steps, &detail, Utc::now())
            .await?;
        tracing::info!(
            incident_id,
            steps = steps.len(),
            dry_run = self.policy.dry_run,
            "plan stored"
        );
        Ok(true)
    }

    async fn work(&self, incident_id: i64, steps: Vec<Step>) -> Result<Outcome, StoreError> {
        let mut failed_group: Option<i32> = None;
        let mut remediated = false;
        for planned in steps {
            // The step as it is now (an approval may have moved it).
            let Some(step) = self
                .store
                .steps(incident_id)
                .await?
                .into_iter()
                .find(|s| s.id == planned.id)
            else {
                continue;
            };
            if step.state.is_final() {
                match step.state {
                    StepState::Failed
                    | StepState::Refused
                    | StepState::Rejected
                    | StepState::Interrupted => failed_group = Some(step.group),
                    StepState::Succeeded if step.kind == StepKind::Verify => remediated = true,
                    StepState::Succeeded if step.kind == StepKind::Escalate => {
                        return Ok(Outcome::Done)
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(stop) = self.stopped(incident_id).await? {
                self.skip(&step, &stop).await?;
                continue;
            }
            if remediated {
                self.skip(&step, "the incident was remediated by an earlier attempt")
                    .await?;
                continue;
            }
            if failed_group == Some(step.group) {
                let why = format!("an earlier step of attempt {} did not succeed", step.group);
                self.skip(&step, &why).await?;
                continue;
            }
            match self.run_step(incident_id, &step).await? {
                StepState::Succeeded if step.kind == StepKind::Verify => {
                    remediated = true;
                    self.store
                        .settle(
                            incident_id,
                            IncidentStatus::Remediated,
                            Utc::now(),
                            &json!({ "verified_by_step": step.id, "attempt": step.group }),
                        )
                        .await?;
                    metrics::counter!("backup_remediator_remediations_total").increment(1);
                    tracing::info!(incident_id, "incident remediated and verified");
                }
                StepState::Succeeded if step.kind == StepKind::Escalate => {
                    return Ok(Outcome::Done)
                }
                StepState::Succeeded | StepState::DryRun => {}
                StepState::Running | StepState::WaitingApproval | StepState::Approved => {
                    return Ok(Outcome::Paused)
                }
                _ => failed_group = Some(step.group),
            }
        }
        Ok(Outcome::Done)
    }

    /// Why the rest of the plan must not run, if it must not: the incident is no longer open.
    async fn stopped(&self, incident_id: i64) -> Result<Option<String>, StoreError> {
        let Some(i) = self.store.get_incident(incident_id).await? else {
            return Ok(Some("the incident no longer exists".to_owned()));
        };
        Ok(match i.status {
            IncidentStatus::Open => None,
            IncidentStatus::Resolved => Some(format!(
                "Alertmanager resolved the alert{}; the remaining steps are skipped",
                i.resolved_at
                    .map(|t| format!(
                        " at {}",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ))
                    .unwrap_or_default()
            )),
            other => Some(format!("the incident is {other}")),
        })
    }

    async fn skip(&self, step: &Step, why: &str) -> Result<(), StoreError> {
        self.move_step(
            step,
            &[
                StepState::Planned,
                StepState::WaitingApproval,
                StepState::Approved,
            ],
            StepState::Skipped,
            why,
            None,
            "step_skipped",
        )
        .await?;
        Ok(())
    }

    async fn move_step(
        &self,
        step: &Step,
        from: &[StepState],
        to: StepState,
        reason: &str,
        output: Option<&Value>,
        event: &str,
    ) -> Result<bool, StoreError> {
        let mut detail = json!({ "step": step.id, "seq": step.seq, "kind": step.kind,
                                 "name": step.name, "target": step.target, "state": to });
        if !reason.is_empty() {
            detail["reason"] = json!(reason);
        }
        if let Some(o) = output {
            detail["output"] = o.clone();
        }
        self.store
            .transition(
                &Transition {
                    step_id: step.id,
                    from,
                    to,
                    reason,
                    output,
                    decided_by: None,
                    at: Utc::now(),
                    event,
                },
                &detail,
            )
            .await
    }

    /// Runs one step as its decision says; returns the state it ended in.
    async fn run_step(&self, incident_id: i64, step: &Step) -> Result<StepState, StoreError> {
        let fresh = [StepState::Planned];
        if step.kind == StepKind::Escalate {
            return self.escalate(incident_id, step).await;
        }
        match (step.decision, step.state) {
            (Decision::DryRun, _) => {
                let why = format!("dry run: would {}", step.reason);
                self.move_step(step, &fresh, StepState::DryRun, &why, None, "step_dry_run")
                    .await?;
                Ok(StepState::DryRun)
            }
            (Decision::Never, _) => {
                let why = format!("policy: {} is never run by the service", step.name);
                self.move_step(step, &fresh, StepState::Refused, &why, None, "step_refused")
                    .await?;
                Ok(StepState::Refused)
            }
            (Decision::Approve, StepState::Planned | StepState::WaitingApproval) => {
                self.await_approval(incident_id, step).await
            }
            _ => self.execute(incident_id, step).await,
        }
    }

    async fn escalate(&self, incident_id: i64, step: &Step) -> Result<StepState, StoreError> {
        let steps = self.store.steps(incident_id).await?;
        let diagnosis = self.store.diagnosis(incident_id).await?;
        let not_done: Vec<Value> = steps
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    StepState::Failed
                        | StepState::Refused
                        | StepState::Rejected
                        | StepState::Interrupted
                        | StepState::DryRun
                )
            })
            .map(|s| json!({ "step": s.id, "name": s.name, "target": s.target, "state": s.state, "reason": s.reason }))
            .collect();
        let reason = if self.policy.dry_run {
            format!(
                "dry run: the service changed nothing; a person must act on the plan. {}",
                step.reason
            )
        } else {
            step.reason.clone()
        };
        let findings = self.store.findings(incident_id).await?;
        let detail = json!({
            "reason": reason,
            "scenario": diagnosis.as_ref().map(|d| d.scenario),
            "diagnosis": diagnosis.as_ref().map(|d| d.summary.clone()),
            "steps_not_done": not_done,
            "rpo": crate::notify::rpo_impact(
                crate::notify::view::last_good_backup(&findings),
                Utc::now(),
                self.settings.notify.rpo_hours,
            ),
        });
        self.store
            .settle(incident_id, IncidentStatus::Escalated, Utc::now(), &detail)
            .await?;
        let scenario = diagnosis.map_or("unknown", |d| d.scenario.as_str());
        metrics::counter!("backup_remediator_escalations_total", "scenario" => scenario)
            .increment(1);
        tracing::warn!(incident_id, scenario, reason = %reason, "incident escalated");
        self.move_step(
            step,
            &[StepState::Planned, StepState::Running],
            StepState::Succeeded,
            "",
            Some(&detail),
            "step_finished",
        )
        .await?;
        Ok(StepState::Succeeded)
    }

    async fn await_approval(&self, incident_id: i64, step: &Step) -> Result<StepState, StoreError> {
        let mut waiting_since = Utc::now();
        if step.state == StepState::Planned {
            let path = format!(
                "/api/v1/incidents/{incident_id}/actions/{}/approve",
                step.id
            );
            let out = json!({ "waiting_since": waiting_since, "approve": path,
                              "reject": path.replace("/approve", "/reject") });
            self.move_step(
                step,
                &[StepState::Planned],
                StepState::WaitingApproval,
                "",
                Some(&out),
                "approval_requested",
            )
            .await?;
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
        let now = self.store.steps(incident_id).await?;
        let Some(current) = now.into_iter().find(|s| s.id == step.id) else {
            return Ok(StepState::Skipped);
        };
        match current.state {
            StepState::Approved => return self.execute(incident_id, &current).await,
            StepState::WaitingApproval => {}
            other => return Ok(other),
        }
        if let Some(stop) = self.stopped(incident_id).await? {
            self.skip(&current, &stop).await?;
            return Ok(StepState::Skipped);
        }
        if Utc::now() - waiting_since > timeout {
            let why = format!(
                "no approval within {} minutes",
                self.policy.approval_timeout_minutes
            );
            self.move_step(
                &current,
                &[StepState::WaitingApproval],
                StepState::Refused,
                &why,
                None,
                "approval_timed_out",
            )
            .await?;
            return Ok(StepState::Refused);
        }
        // Still waiting: parked in the store rather than in a task. The engine works the plan
        // again when an approval wakes it (see `waker`), or when its claim lapses.
        Ok(StepState::WaitingApproval)
    }

    fn context(&self, incident_id: i64) -> ActionContext {
        ActionContext {
            settings: self.settings.clone(),
            policy: self.policy.clone(),
            kube: self.kube.clone(),
            probes: Arc::new(ProbeContext::new(
                self.settings.clone(),
                self.kube.clone(),
                reqwest::Client::new(),
            )),
            incident_id,
        }
    }

    /// Takes the target's lock, checks cap and cooldown, records the intent, acts, records the
    /// outcome.
    async fn execute(&self, incident_id: i64, step: &Step) -> Result<StepState, StoreError> {
        let ctx = self.context(incident_id);
        let ready = [StepState::Planned, StepState::Approved];
        let resuming = step.state == StepState::Running;
        let lease = Duration::from_secs(self.settings.remediation.job_deadline_seconds + 300);
        if !self.lock(incident_id, &step.target, lease).await? {
            let why = format!(
                "{} is being changed by another incident; waited {} s",
                step.target,
                LOCK_WAIT.as_secs()
            );
            self.move_step(step, &ready, StepState::Refused, &why, None, "step_refused")
                .await?;
            return Ok(StepState::Refused);
        }
        let result = async {
            let intent = if resuming {
                self.move_step(
                    step,
                    &[StepState::Running],
                    StepState::Running,
                    "resumed after the process that ran it stopped",
                    None,
                    "step_resumed",
                )
                .await?;
                step.output.clone()
            } else {
                if let Some(why) = self.refusal(incident_id, step).await? {
                    self.move_step(step, &ready, StepState::Refused, &why, None, "step_refused")
                        .await?;
                    return Ok(StepState::Refused);
                }
                let intent = match actions::prepare(&ctx, step).await {
                    Ok(i) => i,
                    Err(why) => {
                        self.move_step(step, &ready, StepState::Failed, &why, None, "step_failed")
                            .await?;
                        return Ok(StepState::Failed);
                    }
                };
                if !self
                    .move_step(step, &ready, StepState::Running, "", Some(&intent), "step_started")
                    .await?
                {
                    return Ok(StepState::Skipped);
                }
                intent
            };
            tracing::info!(incident_id, step = step.id, name = %step.name, target = %step.target, "step running");
            let (state, output, reason) = match actions::apply(&ctx, step, &intent).await {
                Ok(out) => (StepState::Succeeded, out, String::new()),
                Err(why) => (StepState::Failed, json!({ "intent": intent }), why),
            };
            metrics::counter!("backup_remediator_actions_total", "action" => step.name.clone(), "outcome" => state.as_str())
                .increment(1);
            self.move_step(step, &[StepState::Running], state, &reason, Some(&output), "step_finished")
                .await?;
            Ok(state)
        }
        .await;
        let _ = self.store.unlock_target(&step.target, incident_id).await;
        result
    }

    /// Takes the lock on `target`, waiting (bounded) while another incident holds it.
    async fn lock(
        &self,
        incident_id: i64,
        target: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let until = || Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
        let end = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            if self
                .store
                .lock_target(target, incident_id, &self.holder, Utc::now(), until())
                .await?
            {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= end {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Why policy refuses the step now (attempt cap, cooldown), if it does.
    async fn refusal(&self, incident_id: i64, step: &Step) -> Result<Option<String>, StoreError> {
        if step.kind != StepKind::Action && step.kind != StepKind::Verify {
            return Ok(None);
        }
        let cap = i64::from(self.policy.max_attempts_per_incident);
        if self.store.attempts(incident_id, &step.name).await? >= cap {
            return Ok(Some(format!(
                "policy: {} already started {cap} times for this incident",
                step.name
            )));
        }
        let policy_name = if step.kind == StepKind::Verify {
            crate::policy::RERUN_BACKUP
        } else {
            step.name.as_str()
        };
        let cooldown = self.policy.cooldown(policy_name);
        if !cooldown.is_zero() {
            if let Some(last) = self.store.last_started(&step.name, &step.target).await? {
                let next = last + chrono::Duration::from_std(cooldown).unwrap_or_default();
                if next > Utc::now() {
                    return Ok(Some(format!(
                        "policy: cooldown — {} on {} last started at {}; not again before {}",
                        step.name,
                        step.target,
                        last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    )));
                }
            }
        }
        Ok(None)
    }
}
