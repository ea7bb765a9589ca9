//! The Kubernetes probes against the test cluster's real API server, as the service's
//! ServiceAccount: what each says about the backup Job's pods (really run or reported by the node
//! agent), the Secret and the primary, what was asked of the server, and how an unreachable or
//! hung API is bounded.

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::domain::finding::{Signal, Status};
use backup_remediator::probes::backup_job::BackupJob;
use backup_remediator::probes::primary::Primary;
use backup_remediator::probes::secret::SecretProbe;
use backup_remediator::probes::{self, Probe, ProbeContext};
use serde_json::json;

use crate::support::cluster::{self, fixtures as fx, node, TestNamespace};

async fn ctx(ns: &TestNamespace) -> Arc<ProbeContext> {
    let settings = Settings::from_toml(&format!("[kubernetes]\n{}", ns.kubernetes_toml())).unwrap();
    Arc::new(ProbeContext::new(
        Arc::new(settings),
        Some(ns.as_service().await),
        reqwest::Client::new(),
    ))
}

/// The names of the pods of Job `job`, oldest first.
async fn pods(ns: &TestNamespace, job: &str) -> Vec<String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(ns.admin.clone(), &ns.name);
    let mut list = api
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={job}")),
        )
        .await
        .unwrap()
        .items;
    list.sort_by_key(|p| p.metadata.creation_timestamp.clone());
    list.into_iter().filter_map(|p| p.metadata.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_job_is_examined_and_an_ephemeral_storage_eviction_is_named() {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[])).await;
    ns.put(fx::cronjob("true")).await;
    ns.put(fx::job("postgres-backup-0", "echo all good")).await;
    ns.wait_job("postgres-backup-0", "Complete").await;
    // A second apart, so that the newest is plain from the creation times.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Two tries: the node evicts the first pod (ephemeral storage), the second is OOM-killed
    // after it logged a line.
    let mut failing = fx::job("postgres-backup-1", "echo dumping link_users");
    failing["spec"]["backoffLimit"] = json!(1);
    failing["spec"]["template"]["metadata"]["annotations"] = json!({
        node::REPORT: "Evicted,OOMKilled",
        node::MESSAGE: "Pod ephemeral local storage usage exceeds the total limit of containers 1Gi."});
    ns.put(failing).await;
    ns.wait_job("postgres-backup-1", "Failed").await;
    let names = pods(&ns, "postgres-backup-1").await;
    assert_eq!(names.len(), 2, "{names:?}");

    let out = BackupJob.run(ctx(&ns).await).await;

    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![
            Signal::JobFailed {
                job: "postgres-backup-1".into(),
                reason: "BackoffLimitExceeded".into()
            },
            Signal::EphemeralStorageExhausted {
                pod: names[0].clone()
            },
            Signal::PodFailed {
                pod: names[1].clone(),
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
    let logs: Vec<_> = ns
        .cluster
        .service_requests(&ns.name)
        .into_iter()
        .filter(|(_, resource, ..)| resource == "pods/log")
        .collect();
    assert_eq!(
        logs,
        [("get".into(), "pods/log".into(), names[1].clone(), 200)],
        "only the newest pod's log is read"
    );
    // The line the OOM-killed pod wrote came back through the API server.
    assert_eq!(out.evidence["log_pod"], names[1].as_str());
    assert_eq!(out.evidence["log_lines_read"], 1, "{}", out.evidence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_succeeded_job_is_ok_and_no_job_at_all_is_a_problem() {
    let ns = cluster::shared().await.namespace().await;
    let out = BackupJob.run(ctx(&ns).await).await;
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

    ns.put(fx::secret(&[])).await;
    ns.put(fx::cronjob("echo 'Backup of link_users completed'"))
        .await;
    let out = BackupJob.run(ctx(&ns).await).await;
    assert_eq!(out.signals, vec![Signal::NoBackupJob]);

    ns.put(fx::job(
        "postgres-backup-2",
        "echo 'Backup of link_users completed'",
    ))
    .await;
    ns.wait_job("postgres-backup-2", "Complete").await;
    let out = BackupJob.run(ctx(&ns).await).await;
    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    assert_eq!(out.summary, "Job postgres-backup-2 succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_or_late_cronjob_is_a_finding_even_when_the_last_job_succeeded() {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[])).await;
    ns.put(fx::job("postgres-backup-2", "true")).await;
    ns.wait_job("postgres-backup-2", "Complete").await;
    ns.put(fx::cronjob_with("true", "postgres:15-alpine", true))
        .await;
    let out = BackupJob.run(ctx(&ns).await).await;
    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![Signal::CronJobSuspended {
            cronjob: "postgres-backup".into()
        }]
    );
    assert_eq!(out.evidence["cronjob"]["suspend"], true);

    // Resumed, with a daily schedule, and last scheduled three days ago (as the CronJob
    // controller last wrote its status).
    let mut late = fx::cronjob("true");
    let three_days = chrono::Utc::now() - chrono::Duration::days(3);
    late["status"] = json!({"lastScheduleTime":
        three_days.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
    ns.put(late).await;
    let out = BackupJob.run(ctx(&ns).await).await;
    let [Signal::ScheduleNotFiring { cronjob, detail }] = &out.signals[..] else {
        panic!("{:?}", out.signals)
    };
    assert_eq!(cronjob, "postgres-backup");
    assert!(detail.starts_with("last scheduled 72 h ago"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_and_missing_keys_are_named_without_showing_any_value() {
    let ns = cluster::shared().await.namespace().await;
    let out = SecretProbe.run(ctx(&ns).await).await;
    assert_eq!(
        out.signals,
        vec![Signal::SecretMissing {
            name: "postgres-backup-secret".into()
        }]
    );

    ns.put(fx::secret(&[
        ("postgres-user", "backup_user"),
        ("postgres-password", "canary-7e1d-pw"),
        ("encryption-key", "canary-7e1d-key"),
    ]))
    .await;
    let out = SecretProbe.run(ctx(&ns).await).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_ready_endpoints_is_not_ready() {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::statefulset(1)).await;
    ns.put(fx::primary_pod(true)).await;
    ns.put(fx::endpoints(&["10.0.0.5"])).await;
    assert_eq!(Primary.run(ctx(&ns).await).await.status, Status::Ok);

    ns.put(fx::endpoints(&[])).await;
    let out = Primary.run(ctx(&ns).await).await;
    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.summary,
        "Service postgres-primary has no ready endpoints"
    );
}

/// A hung API server: it accepts connections and never answers (nothing a real server can be
/// made to do on demand; this is a socket, not a stand-in of the API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_an_error_and_a_hung_one_is_cut_at_the_deadline() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", hung.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hung.accept().await {
            held.push(conn);
        }
    });
    let ctx_at = |url: &str| {
        backup_remediator::install_crypto_provider();
        let settings = Settings::from_toml(&format!("[kubernetes]\napi_url = \"{url}\"")).unwrap();
        let mut config = kube::Config::new(url.parse().unwrap());
        config.default_namespace = "link-services".into();
        Arc::new(ProbeContext::new(
            Arc::new(settings),
            Some(kube::Client::try_from(config).unwrap()),
            reqwest::Client::new(),
        ))
    };
    let probes: Vec<Arc<dyn Probe>> = vec![Arc::new(BackupJob), Arc::new(SecretProbe)];
    let findings = probes::run_all(&probes, ctx_at(&url), Duration::from_millis(800)).await;
    assert_eq!(findings[0].status, Status::Error);
    assert_eq!(findings[0].summary, "timed out after 800 ms");
    assert!(
        findings[1].duration_ms <= 900,
        "bounded by the deadline too"
    );
    holder.abort();

    let closed = format!("http://127.0.0.1:{}", crate::support::procs::free_port());
    let out = BackupJob.run(ctx_at(&closed)).await;
    assert_eq!(out.status, Status::Error);
    assert!(
        out.summary.starts_with("listing backup Jobs failed"),
        "{}",
        out.summary
    );
}
