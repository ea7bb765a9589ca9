//! Backup Jobs in Kubernetes: create one from the backup CronJob exactly as
//! `kubectl create job --from=cronjob/NAME` does, create any other Job (the manual backup), and
//! watch a Job to success or failure within a deadline.
//!
//! Creating is idempotent by name: a Job that already exists under the chosen name is adopted,
//! not created twice, so a process that resumes after a crash never starts a second backup —
//! but only when it carries the labels that mark it as ours ([`owned_labels`]); a foreign Job
//! under the same name is refused with the reason, never watched as if it were our backup.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::time::Instant;

/// The annotation kubectl puts on a Job created from a CronJob by hand.
pub const INSTANTIATE_ANNOTATION: &str = "cronjob.kubernetes.io/instantiate";

/// How a watched Job ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JobOutcome {
    Succeeded,
    Failed {
        reason: String,
        message: String,
    },
    /// Still running when the deadline passed (the Job is left alone).
    TimedOut {
        after_seconds: u64,
    },
}

/// What went wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("CronJob {0} does not exist")]
    NoCronJob(String),
    #[error("CronJob {0} has no job template spec")]
    EmptyTemplate(String),
    /// A Job of the chosen name exists but does not carry our marks: it is not adopted.
    #[error("Job {name} already exists and is not ours (we mark ours {want}; it has {has}); it is not adopted")]
    Foreign {
        name: String,
        want: String,
        has: String,
    },
    #[error("Job {0} disappeared while it was watched")]
    Vanished(String),
    #[error("{doing}: {source}")]
    Api {
        doing: String,
        #[source]
        source: Box<kube::Error>,
    },
}

fn api_err(doing: impl Into<String>) -> impl FnOnce(kube::Error) -> JobError {
    let doing = doing.into();
    move |source| JobError::Api {
        doing,
        source: Box::new(source),
    }
}

/// The Job `kubectl create job NAME --from=cronjob/CRONJOB` would create: the template's labels,
/// annotations and spec copied unchanged, the `instantiate: manual` annotation, and the CronJob
/// as controlling owner. `extra_labels` mark it as ours (e.g. incident and step ids).
pub fn job_from_cronjob(
    cronjob: &CronJob,
    name: &str,
    extra_labels: &BTreeMap<String, String>,
) -> Result<Job, JobError> {
    let cj_name = cronjob.metadata.name.clone().unwrap_or_default();
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .ok_or_else(|| JobError::EmptyTemplate(cj_name.clone()))?;
    let spec = template
        .spec
        .ok_or_else(|| JobError::EmptyTemplate(cj_name.clone()))?;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.extend(extra_labels.clone());
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(INSTANTIATE_ANNOTATION.to_owned(), "manual".to_owned());
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: cronjob.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "CronJob".to_owned(),
                name: cj_name,
                uid: cronjob.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Whether the Job was created by this call or already existed under that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Created {
    New,
    Adopted,
}

/// The label that says the service made a Job.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The prefix of the labels that say which of its records a Job belongs to (incident, step,
/// manual backup).
pub const OWN_LABEL_PREFIX: &str = "backup-remediator/";

/// The labels of `job` that mark it as ours: `managed-by` and every `backup-remediator/…` label.
/// A Job of the same name is adopted only if it carries all of them with the same values.
pub fn owned_labels(job: &Job) -> BTreeMap<String, String> {
    job.metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| *k == MANAGED_BY || k.starts_with(OWN_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn show(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "none of them".to_owned();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates `job`; if a Job of that name exists already and is ours (it carries every label of
/// [`owned_labels`] with our values), returns that one instead; a foreign one is an error.
pub async fn create_or_adopt(api: &Api<Job>, job: &Job) -> Result<(Job, Created), JobError> {
    let name = job.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), job).await {
        Ok(j) => Ok((j, Created::New)),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api
                .get(&name)
                .await
                .map_err(api_err(format!("reading the existing Job {name}")))?;
            let want = owned_labels(job);
            let theirs = existing.metadata.labels.clone().unwrap_or_default();
            if want.iter().any(|(k, v)| theirs.get(k) != Some(v)) {
                let has = want
                    .keys()
                    .filter_map(|k| theirs.get_key_value(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                return Err(JobError::Foreign {
                    name,
                    want: show(&want),
                    has: show(&has),
                });
            }
            Ok((existing, Created::Adopted))
        }
        Err(e) => Err(api_err(format!("creating Job {name}"))(e)),
    }
}

/// Reads CronJob `cronjob` in the client's namespace and creates (or adopts) Job `name` from it.
pub async fn create_from_cronjob(
    client: &Client,
    namespace: &str,
    cronjob: &str,
    name: &str,
    extra_labels: &BTreeMap<String, String>,
) -> Result<(Job, Created), JobError> {
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let cj = cronjobs
        .get_opt(cronjob)
        .await
        .map_err(api_err(format!("reading CronJob {cronjob}")))?
        .ok_or_else(|| JobError::NoCronJob(cronjob.to_owned()))?;
    let job = job_from_cronjob(&cj, name, extra_labels)?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    create_or_adopt(&jobs, &job).await
}

/// The outcome of a Job whose status says it is finished; `None` while it runs.
pub fn finished(job: &Job) -> Option<JobOutcome> {
    let status = job.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if c.status != "True" {
            continue;
        }
        match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return Some(JobOutcome::Succeeded),
            "Failed" | "FailureTarget" => {
                return Some(JobOutcome::Failed {
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                })
            }
            _ => {}
        }
    }
    let want = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
    (status.succeeded.unwrap_or(0) >= want).then_some(JobOutcome::Succeeded)
}

/// The `app` label of the runbook's manual backup Jobs.
pub const MANUAL_BACKUP_APP: &str = "postgres-manual-backup";

/// The names of the Jobs matching any of `selectors` that have not finished: the backup Jobs
/// running now, whoever started them.
pub async fn active(api: &Api<Job>, selectors: &[&str]) -> Result<Vec<String>, JobError> {
    let mut names = Vec::new();
    for selector in selectors {
        let jobs = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(api_err(format!(
                "listing Jobs ({selector}) to see whether a backup runs"
            )))?;
        for job in jobs.items.iter().filter(|j| finished(j).is_none()) {
            if let Some(name) = &job.metadata.name {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
    }
    Ok(names)
}

/// How a deletion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Deleted, and gone with its pods.
    Gone,
    /// There was no Job of that name.
    Absent,
    /// Still being deleted (its pods terminating) when the wait ended.
    StillThere,
}

/// Deletes Job `name` with foreground propagation — the API server removes the Job only after
/// its pods are gone — and waits, up to `within`, until it is gone. With the default
/// (background) propagation the Job vanishes at once while its pod may still run: the next
/// backup Job would run beside it.
pub async fn delete_and_wait(
    api: &Api<Job>,
    name: &str,
    within: Duration,
) -> Result<Deleted, JobError> {
    match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Deleted::Absent),
        Err(e) => return Err(api_err(format!("deleting Job {name}"))(e)),
    }
    let end = Instant::now() + within;
    loop {
        match api.get_opt(name).await {
            Ok(None) => return Ok(Deleted::Gone),
            Ok(Some(_)) | Err(_) if Instant::now() >= end => return Ok(Deleted::StillThere),
            // A failed read is asked again: only "gone" ends the wait early.
            Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// How long one watch request may stay open before it is renewed (below the client's read
/// timeout, so a quiet Job never looks like a dead connection).
const WATCH_WINDOW: u32 = 10;

/// Watches Job `name` until it succeeds or fails, or `deadline` passes. Reads the Job first
/// (it may already be done), then watches it by name; a dropped watch is resumed after a fresh
/// read. Every wait is bounded by the deadline.
pub async fn wait_for(
    api: &Api<Job>,
    name: &str,
    deadline: Duration,
) -> Result<JobOutcome, JobError> {
    let start = Instant::now();
    let end = start + deadline;
    let timed_out = || JobOutcome::TimedOut {
        after_seconds: start.elapsed().as_secs(),
    };
    let mut failures = 0u32;
    loop {
        if Instant::now() >= end {
            return Ok(timed_out());
        }
        let job = match tokio::time::timeout_at(end, api.get_opt(name)).await {
            Err(_) => return Ok(timed_out()),
            Ok(Ok(Some(job))) => job,
            Ok(Ok(None)) => return Err(JobError::Vanished(name.to_owned())),
            Ok(Err(e)) => {
                failures += 1;
                if failures >= 5 {
                    return Err(api_err(format!("reading Job {name}"))(e));
                }
                tracing::warn!(job = name, error = %e, "reading the Job failed; retrying");
                tokio::time::sleep_until((Instant::now() + Duration::from_secs(1)).min(end)).await;
                continue;
            }
        };
        failures = 0;
        if let Some(outcome) = finished(&job) {
            return Ok(outcome);
        }
        let version = job.metadata.resource_version.clone().unwrap_or_default();
        let left = end.saturating_duration_since(Instant::now()).as_secs() as u32;
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(left.clamp(1, WATCH_WINDOW));
        let watched = async {
            let stream = match api.watch(&wp, &version).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(job = name, error = %e, "watch could not start");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return None;
                }
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(j) | WatchEvent::Modified(j)) => {
                        if let Some(outcome) = finished(&j) {
                            return Some(Ok(outcome));
                        }
                    }
                    Ok(WatchEvent::Deleted(_)) => {
                        return Some(Err(JobError::Vanished(name.to_owned())))
                    }
                    Ok(WatchEvent::Bookmark(_)) => {}
                    // 410 Gone and friends: read again and start a new watch.
                    Ok(WatchEvent::Error(_)) | Err(_) => return None,
                }
            }
            None
        };
        match tokio::time::timeout_at(end, watched).await {
            Err(_) => return Ok(timed_out()),
            Ok(Some(result)) => return result,
            Ok(None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cronjob() -> CronJob {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "postgres-backup", "namespace": "ns", "uid": "u-1"},
            "spec": {"schedule": "0 2 * * *", "jobTemplate": {
                "metadata": {"labels": {"app": "postgres-backup"}, "annotations": {"a": "b"}},
                "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "OnFailure",
                    "containers": [{"name": "backup", "image": "img:1"}]}}}}}
        }))
        .unwrap()
    }

    #[test]
    fn a_job_from_the_cronjob_copies_its_template_and_names_its_owner() {
        let extra = BTreeMap::from([("backup-remediator/incident".to_owned(), "7".to_owned())]);
        let job = job_from_cronjob(&cronjob(), "postgres-backup-verify-7-3", &extra).unwrap();
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["metadata"]["name"], "postgres-backup-verify-7-3");
        assert_eq!(v["metadata"]["namespace"], "ns");
        assert_eq!(v["metadata"]["labels"]["app"], "postgres-backup");
        assert_eq!(v["metadata"]["labels"]["backup-remediator/incident"], "7");
        assert_eq!(v["metadata"]["annotations"]["a"], "b");
        assert_eq!(
            v["metadata"]["annotations"][INSTANTIATE_ANNOTATION],
            "manual"
        );
        assert_eq!(
            v["metadata"]["ownerReferences"],
            json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "postgres-backup", "uid": "u-1", "controller": true}])
        );
        assert_eq!(
            v["spec"],
            serde_json::to_value(&cronjob().spec.unwrap().job_template.spec).unwrap()
        );
    }

    #[test]
    fn finished_reads_conditions_and_counts() {
        let job = |status: serde_json::Value| -> Job {
            serde_json::from_value(json!({"metadata": {"name": "j"}, "status": status})).unwrap()
        };
        assert_eq!(finished(&job(json!({"active": 1}))), None);
        assert_eq!(
            finished(&job(json!({"succeeded": 1}))),
            Some(JobOutcome::Succeeded)
        );
        assert_eq!(
            finished(&job(
                json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "m"}]})
            )),
            Some(JobOutcome::Failed {
                reason: "DeadlineExceeded".into(),
                message: "m".into()
            })
        );
        assert_eq!(
            finished(&job(
                json!({"conditions": [{"type": "Failed", "status": "False"}], "active": 1})
            )),
            None
        );
    }
}
