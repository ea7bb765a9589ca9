//! The runbook's "Manual Backup Execution": a Kubernetes Job that, for each configured database,
//! runs `pg_dump --format=custom --compress=6` against the primary, encrypts the archive with
//! `openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000` and uploads it to
//! `s3://BUCKET/<prefix><subdir>/` with the configured storage class.
//!
//! The credentials reach the pod only through `env[].valueFrom.secretKeyRef` to the backup
//! Secret: the service never reads them into the Job. The script is generated from
//! [`SCRIPT_TEMPLATE`]; every value put into it goes through [`shell_quote`], and database names
//! from a request are accepted only when they are configured ([`ManualBackups::databases_for`]).
//! The Job is watched to the end ([`crate::jobs::wait_for`]) and the uploaded objects checked in
//! S3; the outcome is recorded in the store and served by the API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::config::Settings;
use crate::jobs::{self, JobOutcome};
use crate::probes::s3::job_s3;
use crate::probes::ProbeContext;
use crate::store::{Store, StoreError};

/// Quotes `s` for a POSIX shell: one single-quoted word whose value is exactly `s`. A single
/// quote inside becomes `'\''` (close, escaped quote, reopen); nothing else is special there.
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The Job's script. `{{NAME}}` marks are replaced by shell-quoted values (see [`script`]);
/// the credentials are environment variables set from the Secret. POSIX sh (busybox ash in
/// postgres:16-alpine): no arrays, the database list is a quoted word list.
pub const SCRIPT_TEMPLATE: &str = r#"set -eu
# pipefail where the shell has it (busybox ash and bash do).
if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi
if ! command -v aws >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  apk add --no-cache aws-cli openssl
fi
STAMP={{STAMP}}
BUCKET={{BUCKET}}
if [ -z "$BUCKET" ]; then BUCKET="$BACKUP_S3_BUCKET"; fi
KEY_PREFIX={{KEY_PREFIX}}
STORAGE_CLASS={{STORAGE_CLASS}}
ENDPOINT={{ENDPOINT}}
export AWS_DEFAULT_REGION={{REGION}}
export PGHOST={{PGHOST}}
export PGPORT={{PGPORT}}
export PGUSER="$POSTGRES_USER"
WORK="${TMPDIR:-/tmp}"
for DB in {{DATABASES}}; do
  echo "manual backup of $DB starting"
  FILE="$WORK/manual-backup-$STAMP-$DB.sql"
  # PGDATABASE, not -d: libpq takes it as a name, never as a connection string.
  PGDATABASE="$DB" pg_dump --no-password --verbose --clean --if-exists \
    --format=custom --compress=6 -f "$FILE"
  openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 \
    -in "$FILE" -out "$FILE.enc" -pass env:BACKUP_ENCRYPTION_KEY
  rm -f "$FILE"
  aws s3 cp "$FILE.enc" "s3://$BUCKET/$KEY_PREFIX""manual-backup-$STAMP-$DB.sql.enc" \
    --storage-class "$STORAGE_CLASS" ${ENDPOINT:+--endpoint-url "$ENDPOINT"}
  rm -f "$FILE.enc"
  echo "manual backup of $DB uploaded to s3://$BUCKET/$KEY_PREFIX""manual-backup-$STAMP-$DB.sql.enc"
done
"#;

/// The container's environment: (variable, key of the backup Secret). Nothing else is secret.
pub const SECRET_ENV: [(&str, &str); 6] = [
    ("POSTGRES_USER", "postgres-user"),
    ("PGPASSWORD", "postgres-password"),
    ("BACKUP_S3_BUCKET", "s3-bucket"),
    ("BACKUP_ENCRYPTION_KEY", "encryption-key"),
    ("AWS_ACCESS_KEY_ID", "aws-access-key-id"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-access-key"),
];

/// One manual backup about to be launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPlan {
    pub job_name: String,
    /// `YYYYmmdd_HHMMSS`, in every object key (the runbook's BACKUP_DATE).
    pub stamp: String,
    pub databases: Vec<String>,
    /// `<s3.prefix><subdir>/`, with exactly one `/` between the parts.
    pub key_prefix: String,
    /// The object each database's backup is uploaded to.
    pub object_keys: Vec<String>,
}

impl BackupPlan {
    /// The plan for `databases` at `now`.
    pub fn new(settings: &Settings, databases: Vec<String>, now: DateTime<Utc>) -> Self {
        let m = &settings.manual_backup;
        let prefix = settings.s3.prefix.trim_end_matches('/');
        let key_prefix = if prefix.is_empty() {
            format!("{}/", m.subdir)
        } else {
            format!("{prefix}/{}/", m.subdir)
        };
        let stamp = now.format("%Y%m%d_%H%M%S").to_string();
        let suffix: String = (0..5)
            .map(|_| {
                let n = rand::random::<u8>() % 36;
                char::from_digit(u32::from(n), 36).unwrap_or('x')
            })
            .collect();
        let job_name = format!(
            "{}-{}-{suffix}",
            m.job_name_prefix,
            now.format("%Y%m%d-%H%M%S")
        );
        let object_keys = databases
            .iter()
            .map(|db| format!("{key_prefix}manual-backup-{stamp}-{db}.sql.enc"))
            .collect();
        Self {
            job_name,
            stamp,
            databases,
            key_prefix,
            object_keys,
        }
    }
}

/// The Job's script for `plan`: the template with every mark replaced by a quoted value.
pub fn script(settings: &Settings, plan: &BackupPlan) -> String {
    let dbs = plan
        .databases
        .iter()
        .map(|d| shell_quote(d))
        .collect::<Vec<_>>()
        .join(" ");
    let values: [(&str, String); 9] = [
        ("{{STAMP}}", shell_quote(&plan.stamp)),
        ("{{BUCKET}}", shell_quote(&settings.s3.bucket)),
        ("{{KEY_PREFIX}}", shell_quote(&plan.key_prefix)),
        (
            "{{STORAGE_CLASS}}",
            shell_quote(&settings.manual_backup.storage_class),
        ),
        ("{{ENDPOINT}}", shell_quote(&settings.s3.endpoint)),
        ("{{REGION}}", shell_quote(&settings.s3.region)),
        ("{{PGHOST}}", shell_quote(&settings.target.host)),
        ("{{PGPORT}}", shell_quote(&settings.target.port.to_string())),
        ("{{DATABASES}}", dbs),
    ];
    values
        .iter()
        .fold(SCRIPT_TEMPLATE.to_owned(), |s, (mark, value)| {
            s.replace(mark, value)
        })
}

/// Labels of every manual backup Job (and its pods).
pub fn labels(backup_id: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), "postgres-manual-backup".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "backup-remediator".to_owned(),
        ),
        ("backup-remediator/backup".to_owned(), backup_id.to_string()),
    ])
}

/// The Job object for `plan`: the runbook's manual backup Job, credentials by `secretKeyRef`.
pub fn job(settings: &Settings, plan: &BackupPlan, backup_id: i64) -> Job {
    let m = &settings.manual_backup;
    let secret = &settings.kubernetes.backup_secret;
    let env = SECRET_ENV
        .iter()
        .map(|(name, key)| EnvVar {
            name: (*name).to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: (*key).to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        })
        .collect();
    let labels = labels(backup_id);
    Job {
        metadata: ObjectMeta {
            name: Some(plan.job_name.clone()),
            namespace: Some(settings.kubernetes.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(m.backoff_limit),
            active_deadline_seconds: i64::try_from(m.deadline_seconds).ok(),
            ttl_seconds_after_finished: (m.ttl_seconds_after_finished > 0)
                .then_some(m.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("OnFailure".to_owned()),
                    containers: vec![Container {
                        name: "manual-backup".to_owned(),
                        image: Some(m.image.clone()),
                        command: Some(vec![
                            "/bin/sh".to_owned(),
                            "-c".to_owned(),
                            script(settings, plan),
                        ]),
                        env: Some(env),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// A manual backup as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ManualBackup {
    pub id: i64,
    pub job_name: String,
    pub namespace: String,
    pub databases: Vec<String>,
    pub storage_class: String,
    /// `api` or `cli`.
    pub trigger: String,
    pub actor: String,
    pub status: BackupStatus,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The objects uploaded (checked in S3 after the Job succeeded; planned while it runs).
    pub object_keys: Vec<String>,
    /// Planned keys, sizes found in S3, the Job's outcome.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// Where a manual backup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The Job could not be created or watched.
    Error,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        [
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::TimedOut,
            Self::Error,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
        .ok_or_else(|| format!("unknown manual backup status {s:?}"))
    }
}

/// A manual backup about to be recorded.
#[derive(Debug, Clone)]
pub struct NewManualBackup {
    pub job_name: String,
    pub namespace: String,
    pub databases: Vec<String>,
    pub storage_class: String,
    pub trigger: String,
    pub actor: String,
    pub started_at: DateTime<Utc>,
    pub object_keys: Vec<String>,
    pub detail: Value,
}

/// Why a manual backup could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Invalid(String),
    #[error("no Kubernetes API is configured (in-cluster, KUBECONFIG or kubernetes.api_url): the manual backup Job cannot be created")]
    NoKubernetes,
    #[error("recording the manual backup: {0}")]
    Store(#[from] StoreError),
}

/// The databases to back up: every configured one, or the requested ones if each is configured
/// (duplicates removed, configuration order kept). Nothing else from a request reaches the Job.
pub fn select_databases(
    configured: &[String],
    requested: &[String],
) -> Result<Vec<String>, String> {
    if let Some(unknown) = requested.iter().find(|d| !configured.contains(d)) {
        return Err(format!(
            "unknown database {unknown:?}; configured: {}",
            configured.join(", ")
        ));
    }
    Ok(configured
        .iter()
        .filter(|d| requested.is_empty() || requested.contains(d))
        .cloned()
        .collect())
}

/// Launches manual backup Jobs and records them.
pub struct ManualBackups {
    settings: Arc<Settings>,
    store: Store,
    kube: Option<kube::Client>,
}

impl ManualBackups {
    pub fn new(settings: Arc<Settings>, store: Store, kube: Option<kube::Client>) -> Self {
        Self {
            settings,
            store,
            kube,
        }
    }

    /// The databases to back up (see [`select_databases`]).
    pub fn databases_for(&self, requested: &[String]) -> Result<Vec<String>, StartError> {
        select_databases(&self.settings.target.databases, requested).map_err(StartError::Invalid)
    }

    /// Records the backup and returns it with its plan; [`ManualBackups::run`] launches it.
    pub async fn start(
        &self,
        requested: &[String],
        trigger: &str,
        actor: &str,
    ) -> Result<(ManualBackup, BackupPlan), StartError> {
        let databases = self.databases_for(requested)?;
        if self.kube.is_none() {
            return Err(StartError::NoKubernetes);
        }
        let now = Utc::now();
        let plan = BackupPlan::new(&self.settings, databases, now);
        let new = NewManualBackup {
            job_name: plan.job_name.clone(),
            namespace: self.settings.kubernetes.namespace.clone(),
            databases: plan.databases.clone(),
            storage_class: self.settings.manual_backup.storage_class.clone(),
            trigger: trigger.to_owned(),
            actor: actor.to_owned(),
            started_at: now,
            object_keys: Vec::new(),
            detail: json!({ "planned_object_keys": plan.object_keys }),
        };
        let id = self.store.insert_manual_backup(&new).await?;
        let record = self
            .store
            .get_manual_backup(id)
            .await?
            .ok_or_else(|| StartError::Invalid(format!("manual backup {id} vanished")))?;
        Ok((record, plan))
    }

    /// Creates the Job, watches it to the end, checks the objects and records the outcome.
    pub async fn run(&self, record: &ManualBackup, plan: &BackupPlan) -> ManualBackup {
        let (status, reason, keys, detail) = self.launch(record, plan).await;
        tracing::info!(backup = record.id, job = %plan.job_name, status = status.as_str(), "manual backup finished");
        metrics::counter!("backup_remediator_manual_backups_total", "status" => status.as_str())
            .increment(1);
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
                detail["objects_unverified_because"] = json!(why);
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
                    s3.redact(&crate::aws::explain("S3", &e).words)
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

#[cfg(test)]
mod tests {
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;

    /// What a real `sh` makes of `word` as one argument of printf.
    fn through_sh(word: &str) -> Vec<u8> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {word}"))
            .output()
            .expect("sh");
        assert!(out.status.success(), "sh failed on {word}");
        out.stdout
    }

    #[test]
    fn quoting_keeps_the_awkward_cases_intact() {
        for s in [
            "",
            "link_users",
            "it's",
            "'",
            "''",
            "$(rm -rf /)",
            "`id`",
            "a b\tc\nd",
            "\\",
            "\"$HOME\"",
            "*",
            "-n",
            "é ü",
        ] {
            assert_eq!(through_sh(&shell_quote(s)), s.as_bytes(), "{s:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_quoted_string_is_one_word_with_exactly_its_value(s in "[^\u{0}]{0,40}") {
            prop_assert_eq!(through_sh(&shell_quote(&s)), s.as_bytes().to_vec());
        }

        #[test]
        fn a_quoted_string_has_no_unquoted_quote(s in ".{0,60}") {
            let q = shell_quote(&s);
            prop_assert!(q.starts_with('\'') && q.ends_with('\''));
            // Outside the escaped-quote sequences, the only quotes are the ones we opened and closed.
            let inner = q[1..q.len() - 1].replace("'\\''", "");
            prop_assert!(!inner.contains('\''));
        }
    }

    fn settings() -> Settings {
        Settings::from_toml(
            "[target]\ndatabases = [\"link_users\", \"it's-odd\"]\n[s3]\nprefix = \"postgres-backups/\"\n",
        )
        .unwrap()
    }

    #[test]
    fn every_value_in_the_script_is_quoted() {
        let s = settings();
        let now = DateTime::parse_from_rfc3339("2026-11-25T01:02:03Z")
            .unwrap()
            .with_timezone(&Utc);
        let plan = BackupPlan::new(&s, s.target.databases.clone(), now);
        let script = script(&s, &plan);
        assert!(!script.contains("{{"), "{script}");
        assert!(
            script.contains("for DB in 'link_users' 'it'\\''s-odd'; do"),
            "{script}"
        );
        assert!(script.contains("STAMP='20261125_010203'"));
        assert!(script.contains("KEY_PREFIX='postgres-backups/manual/'"));
        assert!(script.contains("STORAGE_CLASS='STANDARD_IA'"));
        assert!(script.contains("export PGHOST='postgres-primary.link-services.svc.cluster.local'"));
        assert_eq!(
            plan.object_keys,
            [
                "postgres-backups/manual/manual-backup-20261125_010203-link_users.sql.enc",
                "postgres-backups/manual/manual-backup-20261125_010203-it's-odd.sql.enc"
            ]
        );
        assert!(plan
            .job_name
            .starts_with("postgres-manual-backup-20261125-010203-"));
        assert_eq!(
            plan.job_name.len(),
            "postgres-manual-backup-20261125-010203-".len() + 5
        );
        let out = Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sh -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn requested_databases_must_be_configured() {
        let configured = settings().target.databases;
        assert_eq!(
            select_databases(&configured, &[]).unwrap(),
            ["link_users", "it's-odd"]
        );
        assert_eq!(
            select_databases(&configured, &["it's-odd".into(), "it's-odd".into()]).unwrap(),
            ["it's-odd"]
        );
        let err = select_databases(&configured, &["link_users; rm -rf /".into()]).unwrap_err();
        assert!(err.contains("unknown database"), "{err}");
    }
}
