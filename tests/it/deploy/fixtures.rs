//! The Jobs the service creates, built by its own code from deploy/'s configuration: the manual
//! backup Job and a verification Job from a backup CronJob shaped like the runbook's, whose
//! template passes Pod Security "restricted".

use std::collections::BTreeMap;

use backup_remediator::infra::jobs;
use backup_remediator::runbook::manual_backup::{self, BackupPlan};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use serde_json::json;

use super::configured;

/// The manual backup Job `backup-remediator backup` creates with deploy/config.toml.
pub fn manual_backup_job() -> Job {
    let s = configured();
    let plan = BackupPlan::new(&s, s.target.databases.clone(), chrono::Utc::now());
    manual_backup::job(&s, &plan, 42)
}

/// The runbook's backup CronJob (postgres:16-alpine, the backup Secret's keys as env), with a
/// pod template that passes "restricted": what a namespace enforcing it would have.
pub fn compliant_cronjob() -> CronJob {
    let s = configured();
    let k = &s.kubernetes;
    let from_secret = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": k.backup_secret, "key": key}}});
    let cronjob = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": k.backup_cronjob, "namespace": k.namespace, "uid": "0b1c2d3e-cron"},
        "spec": {
            "schedule": "0 2 * * *",
            "jobTemplate": {
                "metadata": {"labels": {"app": "postgres-backup"}},
                "spec": {
                    "backoffLimit": 1,
                    "template": {
                        "metadata": {"labels": {"app": "postgres-backup"}},
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "automountServiceAccountToken": false,
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": 70,
                                "runAsGroup": 70,
                                "seccompProfile": {"type": "RuntimeDefault"}
                            },
                            "containers": [{
                                "name": "backup",
                                "image": "postgres:16-alpine",
                                "command": ["/bin/sh", "-c", "/scripts/backup.sh"],
                                "env": [
                                    from_secret("POSTGRES_USER", "postgres-user"),
                                    from_secret("PGPASSWORD", "postgres-password"),
                                    from_secret("BACKUP_ENCRYPTION_KEY", "encryption-key")
                                ],
                                "securityContext": {
                                    "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}
                                },
                                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
                            }],
                            "volumes": [{"name": "tmp", "emptyDir": {}}]
                        }
                    }
                }
            }
        }
    });
    serde_json::from_value(cronjob).expect("a CronJob")
}

/// The labels the verification step puts on its Job (src/actions/verify.rs).
pub fn verification_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "backup-remediator".to_owned(),
        ),
        ("backup-remediator/incident".to_owned(), "7".to_owned()),
    ])
}

/// The verification Job the service creates from `cronjob`, as `kubectl create job --from`.
pub fn verification_job(cronjob: &CronJob) -> Job {
    jobs::job_from_cronjob(
        cronjob,
        "postgres-backup-verify-7-3",
        &verification_labels(),
    )
    .expect("a Job from the CronJob")
}
