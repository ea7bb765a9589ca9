//! The runbook's "Manual Backup Execution": a Kubernetes Job that, for each configured database,
//! runs `pg_dump --format=custom --compress=6` against the primary, encrypts the archive with
//! `openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000` and uploads it to
//! `s3://BUCKET/<prefix><subdir>/` with the configured storage class.
//!
//! The credentials reach the pod only through `env[].valueFrom.secretKeyRef` to the backup
//! Secret: the service never reads them into the Job. The script is generated from
//! [`SCRIPT_TEMPLATE`]; every value put into it goes through [`shell_quote`], and database names
//! from a request are accepted only when they are configured ([`ManualBackups::databases_for`]).
//! The Job is watched to the end ([`crate::infra::jobs::wait_for`]) and the uploaded objects checked in
//! S3; the outcome is recorded in the store and served by the API. The Job object and its
//! script are built in the `job` module.

mod job;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{json, Value};

pub use job::{
    job, labels, script, shell_quote, BackupPlan, RUN_AS_ID, SCRATCH_DIR, SCRIPT_TEMPLATE,
    SECRET_ENV,
};

use crate::config::Settings;
use crate::infra::jobs::{self, JobOutcome};
use crate::probes::s3::job_s3;
use crate::probes::ProbeContext;
use crate::runbook::restore::StartError;
use crate::store::Store;

use crate::domain::manual_backup::{
    BackupStatus, ManualBackup, NewManualBackup, StartOutcome, StartRules,
};
use crate::domain::policy::{self, Policy};

/// How long an `Idempotency-Key` of `POST /api/v1/backups` is remembered: a repeat within it
/// answers the first request's backup.
pub const IDEMPOTENCY_KEY_HOURS: i64 = 24;

/// The databases to back up: every configured one, or the requested ones if each is configured
/// (duplicates removed, configuration order kept). Nothing else from a request reaches the Job.
pub fn select_databases(
    configured: &[String],
    requested: &[String],
) -> Result<Vec<String>, StartError> {
    if let Some(unknown) = requested.iter().find(|d| !configured.contains(d)) {
        return Err(StartError::UnknownDatabase {
            given: unknown.clone(),
            configured: configured.to_vec(),
        });
    }
    Ok(configured
        .iter()
        .filter(|d| requested.is_empty() || requested.contains(d))
        .cloned()
        .collect())
}

/// Launches manual backup Jobs and records them.
pub struct ManualBackups {
    /// The target whose databases this launcher backs up.
    target: String,
    settings: Arc<Settings>,
    store: Store,
    kube: Option<kube::Client>,
    budget: policy::ManualBackups,
}

impl ManualBackups {
    pub fn new(settings: Arc<Settings>, store: Store, kube: Option<kube::Client>) -> Self {
        Self {
            target: settings.kubernetes.namespace.clone(),
            settings,
            store,
            kube,
            budget: Policy::defaults(true).manual_backups,
        }
    }

    /// Names the target this launcher works for (its settings are that target's).
    pub fn for_target(mut self, name: &str) -> Self {
        self.target = name.to_owned();
        self
    }

    /// The target this launcher works for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The manual backup budget of the policy in force.
    pub fn with_budget(mut self, budget: policy::ManualBackups) -> Self {
        self.budget = budget;
        self
    }

    /// The databases to back up (see [`select_databases`]).
    pub fn databases_for(&self, requested: &[String]) -> Result<Vec<String>, StartError> {
        select_databases(&self.settings.target.databases, requested)
    }

    /// Records the backup and returns it with its plan, which [`ManualBackups::run`] launches;
    /// without a plan when `idempotency_key` repeats an earlier request (its backup is
    /// returned). Refused while a backup Job of the target runs, whoever started it (the
    /// CronJob, a verification, another manual backup), or when the policy's budget is used
    /// up. `actor` is the authenticated requester; `on_behalf_of` the caller's free-text note.
    pub async fn start(
        &self,
        requested: &[String],
        trigger: &str,
        actor: &str,
        on_behalf_of: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<(ManualBackup, Option<BackupPlan>), StartError> {
        let databases = self.databases_for(requested)?;
        let Some(client) = self.kube.clone() else {
            return Err(StartError::NoKubernetes);
        };
        let k = &self.settings.kubernetes;
        let recording = StartError::recording("manual backup");
        let load = |id: i64| async move {
            self.store
                .get_manual_backup(id)
                .await
                .map_err(StartError::recording("manual backup"))?
                .ok_or_else(|| StartError::Invalid(format!("manual backup {id} vanished")))
        };
        let now = Utc::now();
        let plan = BackupPlan::new(&self.settings, databases, now);
        let new = NewManualBackup {
            job_name: plan.job_name.clone(),
            namespace: k.namespace.clone(),
            databases: plan.databases.clone(),
            storage_class: self.settings.manual_backup.storage_class.clone(),
            trigger: trigger.to_owned(),
            actor: actor.to_owned(),
            started_at: now,
            object_keys: Vec::new(),
            detail: match on_behalf_of {
                Some(note) => {
                    json!({ "planned_object_keys": plan.object_keys, "on_behalf_of": note })
                }
                None => json!({ "planned_object_keys": plan.object_keys }),
            },
        };
        // A Job of the target that runs now (the CronJob's, a verification's, a manual one).
        let api: kube::Api<Job> = kube::Api::namespaced(client, &k.namespace);
        let manual = format!("app={}", jobs::MANUAL_BACKUP_APP);
        let running = jobs::active(&api, &[&k.backup_job_selector, &manual])
            .await
            .map_err(|e| StartError::Busy(format!("{e}; no backup is started without knowing")))?;
        let seconds = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
        let rules = StartRules {
            idempotency_key,
            key_seconds: IDEMPOTENCY_KEY_HOURS * 3600,
            running_seconds: seconds(Duration::from_secs(
                self.settings.manual_backup.deadline_seconds + 300,
            )),
            budget: (self.budget.budget, self.budget.budget_window_minutes * 60),
        };
        if let Some(key) = idempotency_key {
            // A repeat answers the first request's backup (its Job may be the one running).
            let seen = self
                .store
                .manual_backup_by_key(key, rules.key_seconds)
                .await
                .map_err(&recording)?;
            if let Some(id) = seen {
                return Ok((load(id).await?, None));
            }
        }
        if let Some(job) = running.first() {
            return Err(busy(job));
        }
        match self
            .store
            .begin_manual_backup(&new, &rules)
            .await
            .map_err(recording)?
        {
            StartOutcome::Started(id) => Ok((load(id).await?, Some(plan))),
            StartOutcome::Replayed(id) => Ok((load(id).await?, None)),
            StartOutcome::Busy { id, job_name } => Err(StartError::Busy(format!(
                "manual backup {id} (Job {job_name}) is running: one backup Job per target at a time"
            ))),
            StartOutcome::OverBudget { used } => Err(StartError::OverBudget(format!(
                "policy: manual_backups budget — {used} manual backups started in the last {} \
                 minutes (budget {})",
                self.budget.budget_window_minutes, self.budget.budget
            ))),
        }
    }

    /// Creates the Job, watches it to the end, checks the objects and records the outcome.
    pub async fn run(&self, record: &ManualBackup, plan: &BackupPlan) -> ManualBackup {
        let (status, reason, keys, detail) = self.launch(record, plan).await;
        tracing::info!(backup = record.id, job = %plan.job_name, status = status.as_str(), "manual backup finished");
        crate::metrics::manual_backup(status.as_str());
        if let Err(e) = self
            .store
            .finish_manual_backup(
                record.id,
                status,
                reason.as_deref(),
                Utc::now(),
                &keys,
                &detail,
            )
            .await
        {
            tracing::error!(backup = record.id, error = %e, "recording the manual backup failed");
        }
        match self.store.get_manual_backup(record.id).await {
            Ok(Some(b)) => b,
            _ => record.clone(),
        }
    }

    async fn launch(
        &self,
        record: &ManualBackup,
        plan: &BackupPlan,
    ) -> (BackupStatus, Option<String>, Vec<String>, Value) {
        let mut detail = record.detail.clone();
        let Some(client) = self.kube.clone() else {
            return (
                BackupStatus::Error,
                Some(StartError::NoKubernetes.to_string()),
                Vec::new(),
                detail,
            );
        };
        let api: kube::Api<Job> =
            kube::Api::namespaced(client.clone(), &self.settings.kubernetes.namespace);
        let job = job(&self.settings, plan, record.id);
        match jobs::create_or_adopt(&api, &job).await {
            Ok((_, created)) => detail["job_created"] = json!(created),
            Err(e) => {
                return (
                    BackupStatus::Error,
                    Some(format!("creating the Job: {e}")),
                    Vec::new(),
                    detail,
                )
            }
        }
        let deadline = Duration::from_secs(self.settings.manual_backup.deadline_seconds);
        let outcome = match jobs::wait_for(&api, &plan.job_name, deadline).await {
            Ok(o) => o,
            Err(e) => {
                return (
                    BackupStatus::Error,
                    Some(format!("watching the Job: {e}")),
                    Vec::new(),
                    detail,
                )
            }
        };
        detail["job_outcome"] = json!(outcome);
        match outcome {
            JobOutcome::Succeeded => {}
            JobOutcome::Failed { reason, message } => {
                return (
                    BackupStatus::Failed,
                    Some(format!(
                        "the Job {} failed: {reason}: {message}",
                        plan.job_name
                    )),
                    Vec::new(),
                    detail,
                )
            }
            JobOutcome::TimedOut { after_seconds } => {
                return (
                    BackupStatus::TimedOut,
                    Some(format!(
                        "the Job {} was still running after {after_seconds} s",
                        plan.job_name
                    )),
                    Vec::new(),
                    detail,
                )
            }
        }
        // The Job says it uploaded; S3 says whether the objects are there.
        let ctx = ProbeContext::new(self.settings.clone(), Some(client), reqwest::Client::new());
        let s3 = match job_s3(&ctx).await {
            Ok(s3) => s3,
            Err(why) => {
                detail["objects_verified"] = json!(false);
                detail["objects_unverified_because"] = json!(why.to_string());
                return (
                    BackupStatus::Succeeded,
                    None,
                    plan.object_keys.clone(),
                    detail,
                );
            }
        };
        let mut found = Vec::new();
        let mut sizes = serde_json::Map::new();
        let mut missing = Vec::new();
        for key in &plan.object_keys {
            match s3
                .client
                .head_object()
                .bucket(&s3.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(head) if head.content_length().unwrap_or(0) > 0 => {
                    sizes.insert(key.clone(), json!(head.content_length()));
                    found.push(key.clone());
                }
                Ok(_) => missing.push(format!("{key} (empty)")),
                Err(e) => missing.push(format!(
                    "{key} ({})",
                    s3.redact(&crate::infra::aws::explain("S3", &e).words)
                )),
            }
        }
        detail["objects_verified"] = json!(true);
        detail["object_sizes"] = Value::Object(sizes);
        if missing.is_empty() {
            (BackupStatus::Succeeded, None, found, detail)
        } else {
            (
                BackupStatus::Failed,
                Some(format!(
                    "the Job succeeded but these objects are not in s3://{}: {}",
                    s3.bucket,
                    missing.join(", ")
                )),
                found,
                detail,
            )
        }
    }
}

/// The refusal while backup Job `job` runs.
fn busy(job: &str) -> StartError {
    StartError::Busy(format!(
        "backup Job {job} is running: one backup Job per target at a time, whatever started it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_databases_must_be_configured() {
        let configured = vec!["link_users".to_owned(), "it's-odd".to_owned()];
        assert_eq!(
            select_databases(&configured, &[]).unwrap(),
            ["link_users", "it's-odd"]
        );
        assert_eq!(
            select_databases(&configured, &["it's-odd".into(), "it's-odd".into()]).unwrap(),
            ["it's-odd"]
        );
        let err = select_databases(&configured, &["link_users; rm -rf /".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown database"), "{err}");
    }
}
