//! Fresh preconditions, re-probed right before a change (not the diagnosis of minutes ago): the
//! primary is restarted only while the database still does not answer and no backup Job runs;
//! the volume is expanded only while it is over the threshold now; a verification never starts
//! a second backup Job while one is active. What was measured is recorded on the step.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{json, Value};

use super::{ActionContext, ActionError};
use crate::domain::action::ActionName;
use crate::domain::finding::{ProbeOutput, Signal};
use crate::domain::plan::{Step, StepKind};
use crate::probes::database::Database;
use crate::probes::disk::Disk;
use crate::probes::Probe;

/// What a fresh look at the world says about running a step now.
#[derive(Debug, Clone, PartialEq)]
pub enum Precondition {
    /// It holds; what was measured goes on the step.
    Holds(Value),
    /// It does not hold: the step is refused with this reason.
    Refuse(String),
    /// Not yet (e.g. a backup Job is running): ask again shortly.
    Wait(String),
}

/// Checks the precondition of `step` now.
pub async fn check(ctx: &ActionContext, step: &Step) -> Precondition {
    match (step.kind, step.name) {
        (StepKind::Action, ActionName::ExpandPvc) => volume_over_threshold(ctx).await,
        (StepKind::Action, ActionName::RestartPrimary) => database_down_and_no_backup(ctx).await,
        (StepKind::Verify, _) => match active_backup_jobs(ctx).await {
            // A resumed verification finds the Job it started itself: that one it adopts.
            Ok(active) if active.iter().all(|j| step.output["job"] == j.as_str()) => {
                Precondition::Holds(json!({ "active_jobs": active }))
            }
            Ok(active) => Precondition::Wait(format!(
                "backup Job {} is running; a second backup is not started beside it",
                active.join(", ")
            )),
            Err(why) => Precondition::Wait(why.to_string()),
        },
        _ => Precondition::Holds(json!({})),
    }
}

async fn probe(ctx: &ActionContext, p: &dyn Probe) -> Option<ProbeOutput> {
    let deadline = Duration::from_millis(ctx.settings.probes.deadline_ms);
    tokio::time::timeout(deadline, p.run(Arc::clone(&ctx.probes)).map(Some))
        .await
        .ok()
        .flatten()
}

async fn volume_over_threshold(ctx: &ActionContext) -> Precondition {
    let threshold = ctx.settings.disk.threshold_percent;
    let Some(out) = probe(ctx, &Disk).await else {
        return Precondition::Refuse(
            "the data volume's usage could not be measured now (the disk probe timed out)"
                .to_owned(),
        );
    };
    let over = out
        .signals
        .iter()
        .any(|s| matches!(s, Signal::VolumeOverThreshold { .. }));
    let measured = json!({ "disk": out.summary, "used_percent": out.evidence["used_percent"],
                           "threshold_percent": threshold });
    if over {
        Precondition::Holds(measured)
    } else if out.evidence["used_percent"].is_number() {
        Precondition::Refuse(format!(
            "measured now: {} — not over the {threshold}% threshold, so the volume is not expanded",
            out.summary
        ))
    } else {
        Precondition::Refuse(format!(
            "the data volume's usage could not be measured now: {}",
            out.summary
        ))
    }
}

async fn database_down_and_no_backup(ctx: &ActionContext) -> Precondition {
    let Some(out) = probe(ctx, &Database).await else {
        return Precondition::Refuse(
            "the database probe timed out; a restart needs a fresh answer that the database is down"
                .to_owned(),
        );
    };
    // Down means no answer at all on every database: a server that answers, even with an
    // error (too many connections, starting up), is up.
    if !out.signals.iter().any(Signal::means_primary_down) {
        return Precondition::Refuse(format!(
            "the database answers now ({}); the primary is not restarted",
            out.summary
        ));
    }
    match active_backup_jobs(ctx).await {
        Ok(active) if active.is_empty() => {
            Precondition::Holds(json!({ "database": out.summary, "active_jobs": [] }))
        }
        Ok(active) => Precondition::Refuse(format!(
            "backup Job {} is running; the primary is not restarted under it",
            active.join(", ")
        )),
        Err(why) => Precondition::Refuse(why.to_string()),
    }
}

/// The backup Jobs that have not finished, whoever started them: the CronJob's and the
/// verifications' (by `kubernetes.backup_job_selector`) and the manual backups'.
pub async fn active_backup_jobs(ctx: &ActionContext) -> Result<Vec<String>, ActionError> {
    let k = &ctx.settings.kubernetes;
    let api: kube::Api<Job> = kube::Api::namespaced(ctx.kube()?.clone(), &k.namespace);
    let manual = format!("app={}", crate::infra::jobs::MANUAL_BACKUP_APP);
    crate::infra::jobs::active(&api, &[&k.backup_job_selector, &manual])
        .await
        .map_err(|e| ActionError::Failed(e.to_string()))
}
