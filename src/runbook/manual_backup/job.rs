//! The manual backup Job itself: the script (every value shell-quoted, see [`shell_quote`]), the
//! plan (Job name, object keys) and the Job object, shaped for Pod Security "restricted".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::config::Settings;
use crate::infra::jobs;

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
/// the credentials are environment variables set from the Secret. POSIX sh (busybox ash in the
/// Alpine-based backup-tools image): no arrays, the database list is a quoted word list. It
/// writes only under `$TMPDIR` (default `/tmp`, an emptyDir in the Job) and needs no root.
pub const SCRIPT_TEMPLATE: &str = r#"set -eu
# pipefail where the shell has it (busybox ash and bash do).
if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi
# The pod runs as a non-root user on a read-only root filesystem: nothing can be installed here,
# so an image without the tools fails at once, saying so (see manual_backup.image).
for TOOL in pg_dump openssl aws; do
  if ! command -v "$TOOL" >/dev/null 2>&1; then
    echo "this image has no $TOOL: set manual_backup.image to one with pg_dump, openssl and aws (the Dockerfile's backup-tools target)" >&2
    exit 2
  fi
done
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
        ("app".to_owned(), jobs::MANUAL_BACKUP_APP.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "backup-remediator".to_owned(),
        ),
        ("backup-remediator/backup".to_owned(), backup_id.to_string()),
    ])
}

/// The user and group the Job runs as: the `USER` of the Dockerfile's backup-tools stage (and of
/// the service's own image). Numeric, so the kubelet can verify `runAsNonRoot`.
pub const RUN_AS_ID: i64 = 10001;

/// Where the dump and its encrypted copy are written: an emptyDir, the root filesystem being
/// read-only. Also `HOME` for the aws CLI (the image sets it there).
pub const SCRATCH_DIR: &str = "/tmp";

/// The Job object for `plan`: the runbook's manual backup Job, credentials by `secretKeyRef`,
/// shaped to pass Pod Security "restricted" (non-root user and group, no privilege escalation,
/// no capabilities, seccomp RuntimeDefault, read-only root filesystem) with its own
/// ServiceAccount whose token is not mounted: the script talks to PostgreSQL and S3, never to
/// the Kubernetes API.
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
    let quantities = |m: &BTreeMap<String, String>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect::<BTreeMap<_, _>>()
        })
    };
    let runtime_default = || SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    };
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
                    service_account_name: Some(m.service_account.clone()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_ID),
                        run_as_group: Some(RUN_AS_ID),
                        fs_group: Some(RUN_AS_ID),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: "manual-backup".to_owned(),
                        image: Some(m.image.clone()),
                        command: Some(vec![
                            "/bin/sh".to_owned(),
                            "-c".to_owned(),
                            script(settings, plan),
                        ]),
                        env: Some(env),
                        resources: Some(ResourceRequirements {
                            requests: quantities(&m.resources.requests),
                            limits: quantities(&m.resources.limits),
                            ..ResourceRequirements::default()
                        }),
                        security_context: Some(SecurityContext {
                            run_as_non_root: Some(true),
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                add: None,
                            }),
                            seccomp_profile: Some(runtime_default()),
                            ..SecurityContext::default()
                        }),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "scratch".to_owned(),
                            mount_path: SCRATCH_DIR.to_owned(),
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "scratch".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
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
    fn an_image_without_the_tools_fails_at_once_naming_the_tool_and_installs_nothing() {
        let s = settings();
        let plan = BackupPlan::new(&s, s.target.databases.clone(), Utc::now());
        let script = script(&s, &plan);
        for installer in ["apk ", "apt-get", "sudo", "pip "] {
            assert!(!script.contains(installer), "{installer} in {script}");
        }
        let empty = tempfile::tempdir().unwrap();
        let out = Command::new("/bin/sh")
            .args(["-c", &script])
            .env_clear()
            .env("PATH", empty.path())
            .env("TMPDIR", empty.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("this image has no pg_dump") && stderr.contains("manual_backup.image"),
            "{stderr}"
        );
        assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
    }

    #[test]
    fn resources_and_account_are_checked_at_start_up_naming_the_key() {
        let ok = Settings::from_toml(
            "[manual_backup.resources]\nrequests = { cpu = \"250m\", memory = \"512Mi\", ephemeral-storage = \"20Gi\" }\nlimits = { cpu = \"2\", memory = \"1.5Gi\" }\n",
        )
        .unwrap();
        assert_eq!(ok.manual_backup.resources.requests["cpu"], "250m");
        for (toml, key) in [
            (
                "[manual_backup.resources.limits]\nmemory = \"lots\"\n",
                "manual_backup.resources.limits.memory",
            ),
            (
                "[manual_backup.resources.requests]\ngpu = \"1\"\n",
                "manual_backup.resources.requests.gpu",
            ),
            (
                "[manual_backup.resources.requests]\ncpu = \"-1\"\n",
                "manual_backup.resources.requests.cpu",
            ),
            (
                "[manual_backup]\nservice_account = \"Default SA\"\n",
                "manual_backup.service_account",
            ),
        ] {
            let err = Settings::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
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
}
