//! The side effects of remediation (Kubernetes, SQL), and the read-only checks and verification
//! between them. Every change is split in two: `prepare` reads the world and decides the exact
//! change (the *intent*, stored with the step before anything is done), `apply` makes the world
//! match the intent. Applying an intent twice changes nothing the second time, so a process that
//! resumes an interrupted step never repeats a finished action.

pub mod checks;
pub mod expand_pvc;
pub mod preconditions;
pub mod repair_role;
pub mod restart_primary;
pub mod verify;

use std::sync::Arc;

use serde_json::Value;

use crate::config::Settings;
use crate::domain::action::ActionName;
use crate::domain::plan::{Step, StepKind};
use crate::domain::policy::Policy;
use crate::probes::s3::JobS3Error;
use crate::probes::secret::SecretUnavailable;
use crate::probes::ProbeContext;

/// Why an action, check or verification could not do its work. The message goes on the step
/// and the timeline as it is.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no Kubernetes API is configured")]
    NoKubernetes,
    /// The step names nothing this service does (a plan from another version).
    #[error("the service has no {kind} named {name}")]
    Unknown { kind: StepKind, name: ActionName },
    /// The intent stored on the step lacks what applying it needs.
    #[error("the step's intent has no {0}")]
    Intent(&'static str),
    /// A Kubernetes call failed; `doing` says which (e.g. `patching PVC data-0`).
    #[error("{doing}: {source}")]
    Kube {
        doing: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the backup Secret is unavailable ({0})")]
    Secret(#[from] SecretUnavailable),
    #[error(transparent)]
    S3(#[from] JobS3Error),
    /// The world is not as the action needs it, or its work failed: said in a sentence.
    #[error("{0}")]
    Failed(String),
}

impl From<String> for ActionError {
    fn from(why: String) -> Self {
        Self::Failed(why)
    }
}

impl From<&str> for ActionError {
    fn from(why: &str) -> Self {
        Self::Failed(why.to_owned())
    }
}

impl ActionError {
    /// A Kubernetes call failed while `doing` something.
    pub fn kube(doing: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let doing = doing.into();
        move |source| Self::Kube {
            doing,
            source: Box::new(source),
        }
    }
}

/// What an action can reach.
pub struct ActionContext {
    pub settings: Arc<Settings>,
    pub policy: Arc<Policy>,
    pub kube: Option<kube::Client>,
    /// For the backup Secret, S3 and the database probe (a fresh one per step).
    pub probes: Arc<ProbeContext>,
    pub incident_id: i64,
}

impl ActionContext {
    pub fn kube(&self) -> Result<&kube::Client, ActionError> {
        self.kube.as_ref().ok_or(ActionError::NoKubernetes)
    }
}

/// Decides the exact change `step` would make, from the current state.
pub async fn prepare(ctx: &ActionContext, step: &Step) -> Result<Value, ActionError> {
    use ActionName as A;
    match (step.kind, step.name) {
        (StepKind::Action, A::ExpandPvc) => expand_pvc::prepare(ctx).await,
        (StepKind::Action, A::RestartPrimary) => Ok(restart_primary::prepare()),
        (StepKind::Action, A::RepairBackupRole) => Ok(serde_json::json!({})),
        (StepKind::Verify, A::VerifyBackup) => Ok(verify::prepare(ctx, step)),
        (StepKind::Check, A::DatabaseAnswers) => Ok(serde_json::json!({})),
        (kind, name) => Err(ActionError::Unknown { kind, name }),
    }
}

/// Makes the world match `intent`; the output goes on the step and the timeline.
pub async fn apply(ctx: &ActionContext, step: &Step, intent: &Value) -> Result<Value, ActionError> {
    use ActionName as A;
    match (step.kind, step.name) {
        (StepKind::Action, A::ExpandPvc) => expand_pvc::apply(ctx, intent).await,
        (StepKind::Action, A::RestartPrimary) => restart_primary::apply(ctx, intent).await,
        (StepKind::Action, A::RepairBackupRole) => repair_role::apply(ctx).await,
        (StepKind::Verify, A::VerifyBackup) => verify::apply(ctx, intent).await,
        (StepKind::Check, A::DatabaseAnswers) => checks::database_answers(ctx).await,
        (kind, name) => Err(ActionError::Unknown { kind, name }),
    }
}
