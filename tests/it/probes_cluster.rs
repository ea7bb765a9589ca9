//! The Kubernetes probes against the stand-in API server: what each says about the backup Job's
//! pods, the Secret and the primary, what kube-rs asked, and how a hung API is bounded.

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::domain::finding::{Signal, Status};
use backup_remediator::probes::backup_job::BackupJob;
use backup_remediator::probes::primary::Primary;
use backup_remediator::probes::secret::SecretProbe;
use backup_remediator::probes::{self, Probe, ProbeContext};

use crate::support::kube_server;
use kube_server::{fixtures as fx, KubeServer};

fn ctx(kube: &KubeServer) -> Arc<ProbeContext> {
    let settings = Settings::from_toml("").unwrap();
    Arc::new(ProbeContext::new(
        Arc::new(settings),
        Some(kube.client()),
        reqwest::Client::new(),
    ))
}

#[tokio::test]
async fn the_newest_job_is_examined_and_an_ephemeral_storage_eviction_is_named() {
    let kube = KubeServer::start().await;
    kube.put(fx::cronjob("postgres-backup"));
    kube.put(fx::job(
        "postgres-backup-1",
        "2026-11-24T02:00:00Z",
        "failed",
    ));
    kube.put(fx::job(
        "postgres-backup-0",
        "2026-11-23T02:00:00Z",
        "succeeded",
    ));
    kube.put(fx::job_pod(
        "postgres-backup-1-aaaaa",
        "postgres-backup-1",
        "2026-11-24T02:00:01Z",
        "evicted-ephemeral",
    ));
    kube.put(fx::job_pod(
        "postgres-backup-1-bbbbb",
        "postgres-backup-1",
        "2026-11-24T02:05:00Z",
        "oomkilled",
    ));
    kube.set_log(fx::NS, "postgres-backup-1-bbbbb", "dumping link_users\n");

    let out = BackupJob.run(ctx(&kube)).await;

    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![
            Signal::JobFailed {
                job: "postgres-backup-1".into(),
                reason: "BackoffLimitExceeded".into()
            },
            Signal::EphemeralStorageExhausted {
                pod: "postgres-backup-1-aaaaa".into()
            },
            Signal::PodFailed {
                pod: "postgres-backup-1-bbbbb".into(),
                reason: "OOMKilled".into(),
                message: "container backup exited with code 137".into()
            },
        ]
    );
    assert!(
        out.summary
            .starts_with("Job postgres-backup-1 failed (BackoffLimitExceeded)"),
        "{}",
        out.summary
    );
    let logs: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/log"))
        .collect();
    assert_eq!(logs.len(), 1, "only the newest pod's log is read");
    assert!(
        logs[0].path.ends_with("/pods/postgres-backup-1-bbbbb/log")
            && logs[0].query.contains("tailLines=100")
    );
}

#[tokio::test]
async fn a_succeeded_job_is_ok_and_no_job_at_all_is_a_problem() {
    let kube = KubeServer::start().await;
    let out = BackupJob.run(ctx(&kube)).await;
    assert_eq!(
        out.signals,
        vec![
            Signal::NoBackupJob,
            Signal::CronJobMissing {
                cronjob: "postgres-backup".into()
            }
        ],
        "no Job, and nothing that would make one"
    );
    assert!(
        out.summary
            .contains("CronJob postgres-backup does not exist"),
        "{}",
        out.summary
    );

    kube.put(fx::cronjob("postgres-backup"));
    let out = BackupJob.run(ctx(&kube)).await;
    assert_eq!(out.signals, vec![Signal::NoBackupJob]);

    kube.put(fx::job(
        "postgres-backup-2",
        "2026-11-24T02:00:00Z",
        "succeeded",
    ));
    kube.put(fx::job_pod(
        "postgres-backup-2-ccccc",
        "postgres-backup-2",
        "2026-11-24T02:00:01Z",
        "ok",
    ));
    kube.set_log(
        fx::NS,
        "postgres-backup-2-ccccc",
        "Backup of link_users completed\n",
    );
    let out = BackupJob.run(ctx(&kube)).await;
    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    assert_eq!(out.summary, "Job postgres-backup-2 succeeded");
}

#[tokio::test]
async fn a_suspended_or_never_scheduled_cronjob_is_a_finding_even_when_the_last_job_succeeded() {
    let kube = KubeServer::start().await;
    kube.put(fx::job(
        "postgres-backup-2",
        "2026-11-24T02:00:00Z",
        "succeeded",
    ));
    kube.put(fx::cronjob_with(
        "postgres-backup",
        "postgres:15-alpine",
        true,
    ));
    let out = BackupJob.run(ctx(&kube)).await;
    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![Signal::CronJobSuspended {
            cronjob: "postgres-backup".into()
        }]
    );
    assert_eq!(out.evidence["cronjob"]["suspend"], true);

    // Created three days ago with a daily schedule, and never scheduled since.
    let mut never = fx::cronjob("postgres-backup");
    let created = chrono::Utc::now() - chrono::Duration::days(3);
    never["metadata"]["creationTimestamp"] = serde_json::json!(created.to_rfc3339());
    kube.put(never);
    let out = BackupJob.run(ctx(&kube)).await;
    let [Signal::ScheduleNotFiring { cronjob, detail }] = &out.signals[..] else {
        panic!("{:?}", out.signals)
    };
    assert_eq!(cronjob, "postgres-backup");
    assert!(
        detail.starts_with("never scheduled in the 72 h since it was created"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_missing_secret_and_missing_keys_are_named_without_showing_any_value() {
    let kube = KubeServer::start().await;
    let out = SecretProbe.run(ctx(&kube)).await;
    assert_eq!(
        out.signals,
        vec![Signal::SecretMissing {
            name: "postgres-backup-secret".into()
        }]
    );

    kube.put(fx::secret(
        "postgres-backup-secret",
        &[
            ("postgres-user", "backup_user"),
            ("postgres-password", "canary-7e1d-pw"),
            ("encryption-key", "canary-7e1d-key"),
        ],
    ));
    let out = SecretProbe.run(ctx(&kube)).await;
    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        ["s3-bucket", "aws-access-key-id", "aws-secret-access-key"]
            .map(|k| Signal::SecretKeyMissing { key: k.into() })
    );
    let shown = format!("{} {} {:?}", out.summary, out.evidence, out.signals);
    assert!(!shown.contains("canary"), "{shown}");
    assert_eq!(out.evidence["keys"]["postgres-password"]["length"], 14);
}

#[tokio::test]
async fn a_primary_without_ready_endpoints_is_not_ready() {
    let kube = KubeServer::start().await;
    kube.put(fx::statefulset("postgres-primary", 1));
    kube.put(fx::primary_pod(
        "postgres-primary-0",
        "postgres-primary",
        true,
    ));
    kube.put(fx::endpoints("postgres-primary", &["10.0.0.5"]));
    assert_eq!(Primary.run(ctx(&kube)).await.status, Status::Ok);

    kube.put(fx::endpoints("postgres-primary", &[]));
    let out = Primary.run(ctx(&kube)).await;
    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.summary,
        "Service postgres-primary has no ready endpoints"
    );
}

#[tokio::test]
async fn an_unreachable_api_is_an_error_and_a_hung_one_is_cut_at_the_deadline() {
    let kube = KubeServer::start().await;
    kube.delay("/apis/batch", Duration::from_secs(30));
    let probes: Vec<Arc<dyn Probe>> = vec![Arc::new(BackupJob), Arc::new(Primary)];
    let findings = probes::run_all(&probes, ctx(&kube), Duration::from_millis(800)).await;
    assert_eq!(findings[0].status, Status::Error);
    assert_eq!(findings[0].summary, "timed out after 800 ms");
    assert!(
        findings[1].duration_ms < 800,
        "the primary probe did not wait for the hung one"
    );

    let c = ctx(&kube);
    drop(kube);
    let out = BackupJob.run(c).await;
    assert_eq!(out.status, Status::Error);
    assert!(
        out.summary.starts_with("listing backup Jobs failed"),
        "{}",
        out.summary
    );
}
