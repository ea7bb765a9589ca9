//! The runbook's verification: a backup Job from the CronJob (as `kubectl create job
//! --from=cronjob/…`), watched to the end, then S3 must hold a new object — newer than the start
//! of the verification, non-empty, its first block decrypting to `PGDMP` with the current key
//! (the encryption probe's own check). The Job's name is fixed in the intent, so a resumed
//! verification adopts the Job it already started instead of starting a second backup; a Job
//! still running at the deadline is deleted with its pods (foreground propagation, waited for),
//! so the next attempt never runs beside it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use serde_json::{json, Value};

use super::{ActionContext, ActionError};
use crate::domain::plan::Step;
use crate::infra::jobs::{self, JobOutcome};
use crate::infra::s3;
use crate::probes::encryption::object_matches_key;
use crate::probes::s3::job_s3;

/// How long a timed-out verification waits for its deleted Job's pods to go (their grace period
/// is 30 s by default).
const DELETE_WAIT: Duration = Duration::from_secs(120);

/// At most this many new objects are checked.
const MAX_CHECKED: usize = 20;

pub fn prepare(ctx: &ActionContext, step: &Step) -> Value {
    let name = format!(
        "{}-{}-{}",
        ctx.settings.remediation.job_name_prefix, ctx.incident_id, step.id
    );
    json!({ "job": name, "since": Utc::now(), "step": step.id })
}

pub async fn apply(ctx: &ActionContext, intent: &Value) -> Result<Value, ActionError> {
    let k = &ctx.settings.kubernetes;
    let name = intent["job"]
        .as_str()
        .ok_or(ActionError::Intent("Job name"))?;
    let since: DateTime<Utc> = serde_json::from_value(intent["since"].clone())
        .map_err(|e| format!("the step's intent has no start time: {e}"))?;
    let client = ctx.kube()?;
    // The marks that make the Job ours: a Job of this name without them is not adopted.
    let mut labels = BTreeMap::from([
        (jobs::MANAGED_BY.to_owned(), "backup-remediator".to_owned()),
        (
            format!("{}incident", jobs::OWN_LABEL_PREFIX),
            ctx.incident_id.to_string(),
        ),
    ]);
    if let Some(step) = intent["step"].as_i64() {
        labels.insert(format!("{}step", jobs::OWN_LABEL_PREFIX), step.to_string());
    }
    let (_, created) =
        jobs::create_from_cronjob(client, &k.namespace, &k.backup_cronjob, name, &labels)
            .await
            .map_err(|e| e.to_string())?;
    let api: Api<Job> = Api::namespaced(client.clone(), &k.namespace);
    let deadline = Duration::from_secs(ctx.settings.remediation.job_deadline_seconds);
    let outcome = jobs::wait_for(&api, name, deadline)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = json!({ "job": name, "created": created, "job_outcome": outcome });
    match &outcome {
        JobOutcome::Succeeded => {}
        JobOutcome::Failed { reason, message } => {
            return Err(format!("backup Job {name} failed: {reason}: {message}").into())
        }
        JobOutcome::TimedOut { after_seconds } => {
            // Never two backup Jobs at once: the step ends only once this one and its pods are
            // gone, so the next attempt never starts beside them.
            let deleted = match jobs::delete_and_wait(&api, name, DELETE_WAIT).await {
                Ok(jobs::Deleted::Gone) => "deleted it and its pods".to_owned(),
                Ok(jobs::Deleted::Absent) => "it is gone".to_owned(),
                Ok(jobs::Deleted::StillThere) => format!(
                    "it was still being deleted after {} s; the next verification waits for it",
                    DELETE_WAIT.as_secs()
                ),
                Err(e) => format!("deleting it failed ({e}); the next verification waits for it"),
            };
            return Err(format!(
                "backup Job {name} was still running after {after_seconds} s; {deleted}"
            )
            .into());
        }
    }

    let secret = ctx.probes.backup_secret().await?;
    let key = secret
        .encryption_key
        .clone()
        .ok_or("the backup Secret has no encryption-key to check the new backup with")?;
    let job = job_s3(&ctx.probes).await?;
    let listing = s3::list_backups(&job.client, &job.bucket, &job.prefix)
        .await
        .map_err(|e| job.redact(&crate::infra::aws::explain("S3", &e).words))?;
    let location = format!("s3://{}/{}", job.bucket, job.prefix);
    let since_words = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let recent = listing.since(since);
    if recent.is_empty() {
        // A listing cut short cannot say the object is not there.
        if let Some(why) = job.incomplete(&listing) {
            return Err(format!(
                "backup Job {name} succeeded but its new object could not be looked for under {location} since {since_words}: {why}"
            )
            .into());
        }
        return Err(format!(
            "backup Job {name} succeeded but no new object appeared under {location} since {since_words}"
        )
        .into());
    }
    let mut checked = Vec::new();
    for object in recent.iter().rev().take(MAX_CHECKED) {
        if object.size <= 0 {
            return Err(format!("the new backup {} is empty", object.key).into());
        }
        match object_matches_key(&job, &key, &object.key).await {
            Ok(Ok(())) => checked.push(json!({ "key": object.key, "size": object.size,
                                               "decrypts_to_pg_dump": true })),
            Ok(Err(why)) => {
                return Err(format!(
                    "the new backup {} does not decrypt to a pg_dump archive with the current key: {why}",
                    object.key
                ).into())
            }
            Err(why) => return Err(why.to_string().into()),
        }
    }
    out["objects"] = json!(checked);
    Ok(out)
}
