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
use crate::domain::plan::{Step, StepKind};
use crate::domain::policy::{Policy, EXPAND_PVC, REPAIR_BACKUP_ROLE, RESTART_PRIMARY};
use crate::probes::ProbeContext;
use crate::workflow::playbooks::{CHECK_DATABASE_ANSWERS, VERIFY_BACKUP};

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
    pub fn kube(&self) -> Result<&kube::Client, String> {
        self.kube
            .as_ref()
            .ok_or_else(|| "no Kubernetes API is configured".to_owned())
    }
}

/// Decides the exact change `step` would make, from the current state.
pub async fn prepare(ctx: &ActionContext, step: &Step) -> Result<Value, String> {
    match (step.kind, step.name.as_str()) {
        (StepKind::Action, EXPAND_PVC) => expand_pvc::prepare(ctx).await,
        (StepKind::Action, RESTART_PRIMARY) => Ok(restart_primary::prepare()),
        (StepKind::Action, REPAIR_BACKUP_ROLE) => Ok(serde_json::json!({})),
        (StepKind::Verify, VERIFY_BACKUP) => Ok(verify::prepare(ctx, step)),
        (StepKind::Check, CHECK_DATABASE_ANSWERS) => Ok(serde_json::json!({})),
        (kind, name) => Err(format!("the service has no {kind} named {name}")),
    }
}

/// Makes the world match `intent`; the output goes on the step and the timeline.
pub async fn apply(ctx: &ActionContext, step: &Step, intent: &Value) -> Result<Value, String> {
    match (step.kind, step.name.as_str()) {
        (StepKind::Action, EXPAND_PVC) => expand_pvc::apply(ctx, intent).await,
        (StepKind::Action, RESTART_PRIMARY) => restart_primary::apply(ctx, intent).await,
        (StepKind::Action, REPAIR_BACKUP_ROLE) => repair_role::apply(ctx).await,
        (StepKind::Verify, VERIFY_BACKUP) => verify::apply(ctx, intent).await,
        (StepKind::Check, CHECK_DATABASE_ANSWERS) => checks::database_answers(ctx).await,
        (kind, name) => Err(format!("the service has no {kind} named {name}")),
    }
}
