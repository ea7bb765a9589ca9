//! A remediation plan: the ordered steps a playbook chose for an incident, each with the policy's
//! decision, and the states a step moves through. Pure data, stored before anything runs.
//!
//! Steps come in attempt groups: a group is one way out (a fix and its verification); when a
//! step of a group fails, the rest of that group is skipped and the next group is tried. The
//! last group is normally an escalation.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    format!("unknown {} {s:?}", stringify!($name))
                })
            }
        }
    };
}

string_enum!(
    /// What a step does.
    StepKind {
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
    Decision {
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
    StepState {
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
    pub name: String,
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
    pub name: String,
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
