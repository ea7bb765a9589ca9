//! A remediation plan: the ordered steps a playbook chose for an incident, each with the policy's
//! decision, and the states a step moves through. Pure data, stored before anything runs.
//!
//! Steps come in attempt groups: a group is one way out (a fix and its verification); when a
//! step of a group fails, the rest of that group is skipped and the next group is tried. The
//! last group is normally an escalation.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::action::ActionName;
use crate::domain::names::string_enum;

string_enum!(
    /// What a step does.
    #[derive(ToSchema)]
    pub StepKind "step kind" {
        /// A change (Kubernetes, SQL), governed by policy.
        Action => "action",
        /// A read-only check (e.g. wait until the database answers).
        Check => "check",
        /// Re-run the backup and check the new object in S3: the runbook's verification.
        Verify => "verify",
        /// Hand the incident to people.
        Escalate => "escalate",
    }
);

string_enum!(
    /// The policy's decision for a step, taken when the plan is made.
    #[derive(ToSchema)]
    pub Decision "decision" {
        /// Runs without a person.
        Auto => "auto",
        /// Waits for an approval through the API.
        Approve => "approve",
        /// Never runs: recorded so the plan shows it was considered.
        Never => "never",
        /// Dry run: recorded, nothing changed.
        DryRun => "dry_run",
    }
);

string_enum!(
    /// Where a step stands.
    #[derive(ToSchema)]
    pub StepState "step state" {
        Planned => "planned",
        WaitingApproval => "waiting_approval",
        Approved => "approved",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// Refused by policy (never, cooldown, attempt cap, ceiling).
        Refused => "refused",
        /// A person rejected the approval.
        Rejected => "rejected",
        /// Not run: an earlier step of its group failed, the incident was remediated, resolved…
        Skipped => "skipped",
        /// The process stopped while the step ran; what it did is checked before going on.
        Interrupted => "interrupted",
        /// Dry run: what would have run.
        DryRun => "dry_run",
    }
);

impl StepState {
    /// No further transition is possible.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::Failed
                | Self::Refused
                | Self::Rejected
                | Self::Skipped
                | Self::Interrupted
                | Self::DryRun
        )
    }
}

/// A step as a playbook proposes it, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    pub group: i32,
    pub kind: StepKind,
    /// Action, check or escalation name (e.g. `expand_pvc`, `database_answers`).
    pub name: ActionName,
    /// What it acts on, e.g. `pvc/link-services/postgres-data-0` (cooldowns and locks key on it).
    pub target: String,
    pub decision: Decision,
    /// Why this step, and why this decision, in a sentence.
    pub reason: String,
}

/// A stored step.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Step {
    pub id: i64,
    pub incident_id: i64,
    pub seq: i32,
    pub group: i32,
    pub kind: StepKind,
    #[schema(value_type = String)]
    pub name: ActionName,
    pub target: String,
    pub decision: Decision,
    pub state: StepState,
    pub reason: String,
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
    /// Who approved or rejected it.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A process's hold on an incident: who, and the claim's epoch (the fencing token). Every new
/// claim increments the epoch, so a process whose lease lapsed and was taken over holds an old
/// epoch and can no longer move the incident's steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub holder: String,
    pub epoch: i64,
}

string_enum!(
    /// Why the gate refused a step: the `reason` label of
    /// `backup_remediator_actions_refused_total` (a small fixed set).
    #[derive(ToSchema)]
    pub Refusal "refusal" {
        /// The policy in force now says `never` (or an approval timed out).
        Policy => "policy",
        /// The same action on the same target started too recently.
        Cooldown => "cooldown",
        /// The action's starts in the rolling window reached the policy's budget.
        Budget => "budget",
        /// The action already started the policy's maximum times for this incident.
        Attempts => "attempts",
        /// Another incident held the target for too long.
        Lock => "lock",
        /// A fresh re-probe says the action's precondition does not hold now.
        Precondition => "precondition",
    }
);

/// A state change of a step, applied only if the step is in one of `from` (so two processes, or
/// a person and a process, never both move it).
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub step_id: i64,
    pub from: &'a [StepState],
    pub to: StepState,
    pub reason: &'a str,
    pub output: Option<&'a serde_json::Value>,
    pub decided_by: Option<&'a str>,
    pub at: DateTime<Utc>,
    /// Timeline event written in the same transaction.
    pub event: &'a str,
    /// When set, the step moves only while this claim still holds the incident.
    pub fence: Option<&'a Claim>,
}

/// What the policy in force now says about a step the gate is asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Allowed: the gate still checks claim, incident, attempts, cooldown, budget and lock.
    Run,
    /// Dry run now: the step ends `dry_run` with this reason.
    DryRun(&'a str),
    /// Refused now (policy `never`, a failed precondition): the step ends `refused`.
    Refuse(Refusal, &'a str),
}

/// One request to the action gate: start `step` (move it to `running` with its intent) if,
/// in one store transaction, every check passes.
#[derive(Debug, Clone)]
pub struct GateRequest<'a> {
    pub step: &'a Step,
    pub claim: &'a Claim,
    /// The states the step may start from.
    pub from: &'a [StepState],
    pub verdict: Verdict<'a>,
    /// The policy's name of the action (a verification is a `rerun_backup`).
    pub action: ActionName,
    /// Whether the step changes the world: counted against cooldown, attempts and budget, and
    /// holds its target's lock. Read-only checks are not.
    pub counted: bool,
    pub cooldown_seconds: i64,
    /// (starts, window in seconds), across all incidents and replicas of the step's target.
    pub budget: (i64, i64),
    /// Steps that change the world running at once across the whole fleet (every target and
    /// replica); a step beyond it waits (`Busy`).
    pub fleet_cap: i64,
    pub max_attempts: i64,
    /// How long the target lock lasts (database clock).
    pub lock_seconds: i64,
    /// The exact change, stored on the step before anything is done.
    pub intent: &'a serde_json::Value,
    /// Timeline detail of the step (the gate adds state and reason).
    pub detail: &'a serde_json::Value,
    /// Resuming a `running` step its previous claim holder left: every check applies again (its
    /// own start is not counted against it, nor recorded twice); a failed one ends the step
    /// `interrupted`.
    pub resume: bool,
}

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateOutcome {
    /// The step is `running` with its intent: act now.
    Started,
    /// The step ended here (`refused`, `skipped`, `dry_run`; `interrupted` for a resumed step)
    /// with the reason on the timeline.
    Ended {
        state: StepState,
        refusal: Option<Refusal>,
        reason: String,
    },
    /// The target is held by another incident: nothing changed; ask again later.
    Busy(String),
    /// This process may not move the step (claim lost, the step moved on): leave it alone.
    Lost(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>().unwrap(), *s);
        }
        for d in Decision::ALL {
            assert_eq!(
                serde_json::to_value(d).unwrap(),
                serde_json::json!(d.as_str())
            );
        }
        assert!("bogus".parse::<StepKind>().is_err());
    }
}
