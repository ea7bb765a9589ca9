//! Works an incident's plan: plans it from the diagnosis (stored before anything runs; an alert
//! that keeps coming back is escalated without any action by the flapping breaker), then runs
//! each step through the action gate. A plan is a proposal; the gate decides, right before the
//! change and in one store transaction with the step's move to `running`: the incident is open,
//! this process still holds its claim (fencing token, lease by the database clock), the policy
//! *in force now* (not the decision stored at planning) allows it, the attempt cap, cooldown and
//! action budget leave room, and the target is free. Before asking the gate, a fresh re-probe
//! checks the action's precondition. A step found `running` (the process died in it) passes the
//! same gate and re-probe again: if it may still run it is resumed from its stored intent, which
//! is idempotent, never started afresh; if not, it ends `interrupted` with the reason and the
//! rest of its attempt is skipped (the plan's escalation then pages once).
//!
//! A process that loses its claim, or finds a step moved by someone else, stops: it never marks
//! another process's steps and never escalates on that account.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::actions::ActionContext;
use crate::config::Settings;
use crate::domain::action::ActionName;
use crate::domain::incident::IncidentStatus;
use crate::domain::plan::{
    Claim, Decision, PlannedStep, Refusal, Step, StepKind, StepState, Transition, Verdict,
};
use crate::domain::policy::Policy;
use crate::probes::ProbeContext;
use crate::store::{Store, StoreError};
use crate::workflow::playbooks::{self, PlanInput};

mod gated;
mod people;

/// How long a step waits for a target another incident holds (or a running backup Job) before
/// it is refused.
const LOCK_WAIT: Duration = Duration::from_secs(600);
/// How often a waiting step asks again.
const RETRY: Duration = Duration::from_secs(2);

/// Runs plans. One per process; shared by the engine and the approval API (for wake-ups).
pub struct Remediator {
    /// The target whose incidents this remediator works (metrics, messages).
    target: String,
    store: Store,
    settings: Arc<Settings>,
    policy: Arc<Policy>,
    kube: Option<kube::Client>,
    holder: String,
    wake: Arc<Notify>,
    /// One HTTP client and one set of AWS clients for every step: building them loads TLS roots
    /// and credential providers, which per step cost more than the calls they make.
    http: reqwest::Client,
    clients: Arc<crate::probes::Clients>,
}

/// How working the plan ended for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing more to do (remediated, escalated, resolved, no playbook).
    Done,
    /// Interrupted (shutdown, lost claim, a step moved by someone else): another pass continues.
    Paused,
}

/// How one step ended in this pass: a state, or "not ours to move any more".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    State(StepState),
    Lost,
}

/// The policy's name of what a step does (a verification reruns the backup).
fn policy_action(step: &Step) -> ActionName {
    match step.kind {
        StepKind::Verify => ActionName::RerunBackup,
        _ => step.name,
    }
}

fn step_detail(step: &Step) -> Value {
    json!({ "step": step.id, "seq": step.seq, "kind": step.kind, "name": step.name,
            "target": step.target })
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
            target: settings.kubernetes.namespace.clone(),
            store,
            http: crate::probes::http_client(&settings),
            settings,
            policy,
            kube,
            holder,
            wake: Arc::new(Notify::new()),
            clients: Arc::default(),
        }
    }

    /// Names the target this remediator works for (the settings are that target's).
    pub fn for_target(mut self, name: &str) -> Self {
        self.target = name.to_owned();
        self
    }

    /// Shares the approval wake-up of another remediator (one per process, many targets).
    pub fn with_waker(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Shares the HTTP and AWS clients of the whole process.
    pub fn with_clients(
        mut self,
        http: reqwest::Client,
        clients: Arc<crate::probes::Clients>,
    ) -> Self {
        self.http = http;
        self.clients = clients;
        self
    }

    /// The target this remediator works for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Wakes the plans parked for an approval (the API calls it after recording one; the engine
    /// listens).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The policy in force in this process.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// This process's name in claims and locks.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Plans the incident if it has no plan yet, then works the plan under `claim`.
    pub async fn remediate(&self, incident_id: i64, claim: &Claim) -> Result<Progress, StoreError> {
        let mut steps = self.store.steps(incident_id).await?;
        if steps.is_empty() {
            if !self.make_plan(incident_id).await? {
                return Ok(Progress::Done);
            }
            steps = self.store.steps(incident_id).await?;
        }
        self.work(incident_id, claim, steps).await
    }

    async fn make_plan(&self, incident_id: i64) -> Result<bool, StoreError> {
        let Some(incident) = self.store.get_incident(incident_id).await? else {
            return Ok(false);
        };
        let Some(diagnosis) = self.store.diagnosis(incident_id).await? else {
            return Ok(false);
        };
        let flapping = &self.policy.flapping;
        let recent = self
            .store
            .recent_incidents(
                &incident.fingerprint,
                incident_id,
                self.policy.flapping_window(),
            )
            .await?;
        let steps = if recent >= flapping.incidents {
            let why = format!(
                "flapping: alert {} opened {recent} incidents in the last {} minutes (breaker: {}); \
                 escalated without any action",
                incident.fingerprint, flapping.window_minutes, flapping.incidents
            );
            // One page per window: a breaker that already paged for this alert covers this flap.
            let since = chrono::Duration::from_std(self.policy.flapping_window())
                .ok()
                .and_then(|w| Utc::now().checked_sub_signed(w))
                .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
            let paged_with = self
                .store
                .breaker_paged(&incident.fingerprint, incident_id, since)
                .await?;
            self.store
                .append_event(
                    incident_id,
                    Utc::now(),
                    "flapping_breaker",
                    &json!({ "reason": why, "incidents": recent, "threshold": flapping.incidents,
                             "window_minutes": flapping.window_minutes, "paged_with": paged_with }),
                )
                .await?;
            crate::metrics::flapping_break();
            vec![PlannedStep {
                group: 1,
                kind: StepKind::Escalate,
                name: ActionName::Escalate,
                target: "on-call".to_owned(),
                decision: Decision::Auto,
                reason: why,
            }]
        } else {
            let findings = self.store.findings(incident_id).await?;
            let input = PlanInput {
                diagnosis: &diagnosis,
                findings: &findings,
                settings: &self.settings,
            };
            let Some(steps) = playbooks::plan(&incident.alertname, &input, &self.policy) else {
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
            steps
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

    async fn work(
        &self,
        incident_id: i64,
        claim: &Claim,
        steps: Vec<Step>,
    ) -> Result<Progress, StoreError> {
        let mut failed_group: Option<i32> = None;
        let mut remediated = false;
        for planned in steps {
            // The step as it is now (an approval may have moved it).
            let Some(step) = self.current(incident_id, planned.id).await? else {
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
                        return Ok(Progress::Done)
                    }
                    _ => {}
                }
                continue;
            }
            let skip_reason = if let Some(stop) = self.stopped(incident_id).await? {
                Some(stop)
            } else if remediated {
                Some("the incident was remediated by an earlier attempt".to_owned())
            } else if failed_group == Some(step.group) {
                Some(format!(
                    "an earlier step of attempt {} did not succeed",
                    step.group
                ))
            } else {
                None
            };
            if let Some(why) = skip_reason {
                if !self.skip(&step, claim, &why).await? {
                    return Ok(Progress::Paused);
                }
                continue;
            }
            match self.run_step(incident_id, claim, &step).await? {
                Ran::Lost => {
                    tracing::info!(
                        incident_id,
                        step = step.id,
                        "the step is another process's now; stopping here"
                    );
                    return Ok(Progress::Paused);
                }
                Ran::State(StepState::Succeeded) if step.kind == StepKind::Verify => {
                    remediated = true;
                    // The steps left (the escalation kept for a failed fix) are skipped in the
                    // same write: a remediated incident never shows a plan still pending.
                    self.store
                        .settle_skipping_rest(
                            incident_id,
                            IncidentStatus::Remediated,
                            Utc::now(),
                            &json!({ "verified_by_step": step.id, "attempt": step.group }),
                            claim,
                            "the incident is remediated",
                        )
                        .await?;
                    crate::metrics::remediation(&self.target);
                    tracing::info!(incident_id, "incident remediated and verified");
                }
                Ran::State(StepState::Succeeded) if step.kind == StepKind::Escalate => {
                    return Ok(Progress::Done)
                }
                Ran::State(StepState::Succeeded | StepState::DryRun | StepState::Skipped) => {}
                Ran::State(
                    StepState::Running | StepState::WaitingApproval | StepState::Approved,
                ) => return Ok(Progress::Paused),
                Ran::State(_) => failed_group = Some(step.group),
            }
        }
        Ok(Progress::Done)
    }

    async fn current(&self, incident_id: i64, step_id: i64) -> Result<Option<Step>, StoreError> {
        Ok(self
            .store
            .steps(incident_id)
            .await?
            .into_iter()
            .find(|s| s.id == step_id))
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

    /// Skips a step not yet started; `false` when it was not ours to move.
    async fn skip(&self, step: &Step, claim: &Claim, why: &str) -> Result<bool, StoreError> {
        let waiting = [
            StepState::Planned,
            StepState::WaitingApproval,
            StepState::Approved,
        ];
        self.move_step(
            step,
            claim,
            &waiting,
            StepState::Skipped,
            why,
            None,
            "step_skipped",
        )
        .await
    }

    /// Moves a step (fenced by `claim`) with its timeline event; `false` when it had moved on
    /// or the claim is no longer this process's.
    #[allow(clippy::too_many_arguments)]
    async fn move_step(
        &self,
        step: &Step,
        claim: &Claim,
        from: &[StepState],
        to: StepState,
        reason: &str,
        output: Option<&Value>,
        event: &str,
    ) -> Result<bool, StoreError> {
        let mut detail = step_detail(step);
        detail["state"] = json!(to);
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
                    fence: Some(claim),
                },
                &detail,
            )
            .await
    }

    /// Runs one step as the policy in force now says; returns how it ended in this pass.
    async fn run_step(
        &self,
        incident_id: i64,
        claim: &Claim,
        step: &Step,
    ) -> Result<Ran, StoreError> {
        if step.kind == StepKind::Escalate {
            return self.escalate(incident_id, claim, step).await;
        }
        if self.target == crate::metrics::NO_TARGET {
            // The remediator of incidents routed to no target only escalates: whatever plan such
            // an incident holds, no change is made for it (it could be the wrong database).
            let why = "the incident names no configured target: nothing is changed for it";
            let from = [
                StepState::Planned,
                StepState::WaitingApproval,
                StepState::Approved,
                StepState::Running,
            ];
            let to = StepState::Interrupted;
            if !self
                .move_step(step, claim, &from, to, why, None, "step_interrupted")
                .await?
            {
                return Ok(Ran::Lost);
            }
            return Ok(Ran::State(to));
        }
        let action = policy_action(step);
        let decision = match step.kind {
            StepKind::Check if self.policy.dry_run => Decision::DryRun,
            StepKind::Check => Decision::Auto,
            _ => self.policy.decide(action),
        };
        if step.state == StepState::Running {
            // Resumed: the policy in force now decides again, through the whole gate.
            let why;
            let verdict = match decision {
                Decision::DryRun => {
                    why = format!("dry run (policy in force now): would {}", step.reason);
                    Verdict::DryRun(&why)
                }
                Decision::Never => {
                    why = format!("policy: {action} is never run by the service");
                    Verdict::Refuse(Refusal::Policy, &why)
                }
                Decision::Approve if step.decided_by.is_none() => {
                    why = format!(
                        "policy: {action} now needs an approval, and this step was started without one"
                    );
                    Verdict::Refuse(Refusal::Policy, &why)
                }
                Decision::Approve | Decision::Auto => Verdict::Run,
            };
            return self.execute(incident_id, claim, step, verdict).await;
        }
        match decision {
            Decision::DryRun => {
                let why = format!("dry run (policy in force now): would {}", step.reason);
                self.decide_now(claim, step, Verdict::DryRun(&why)).await
            }
            Decision::Never => {
                let why = format!("policy: {action} is never run by the service");
                self.decide_now(claim, step, Verdict::Refuse(Refusal::Policy, &why))
                    .await
            }
            Decision::Approve if step.state != StepState::Approved => {
                self.await_approval(incident_id, claim, step).await
            }
            Decision::Approve | Decision::Auto => {
                self.execute(incident_id, claim, step, Verdict::Run).await
            }
        }
    }

    fn context(&self, incident_id: i64) -> ActionContext {
        ActionContext {
            settings: self.settings.clone(),
            policy: self.policy.clone(),
            kube: self.kube.clone(),
            probes: Arc::new(
                ProbeContext::new(self.settings.clone(), self.kube.clone(), self.http.clone())
                    .with_clients(self.clients.clone()),
            ),
            incident_id,
        }
    }
}
