//! Backup Jobs through kube-rs against the stand-in API server: the Job created from the CronJob
//! is the one `kubectl create job --from=cronjob/…` would send, a second creation adopts it, and
//! the watch sees the Job finish or gives up at the deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use backup_remediator::infra::jobs::{self, Created, JobOutcome};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use serde_json::json;

use crate::support::kube_server;
use kube_server::{fixtures as fx, KubeServer};

fn ours() -> BTreeMap<String, String> {
    BTreeMap::from([("backup-remediator/incident".to_owned(), "12".to_owned())])
}

#[tokio::test]
async fn a_job_created_from_the_cronjob_is_posted_with_its_template_owner_and_annotation() {
    let kube = KubeServer::start().await;
    kube.put(fx::cronjob("postgres-backup"));

    let (job, created) = jobs::create_from_cronjob(
        &kube.client(),
        fx::NS,
        "postgres-backup",
        "postgres-backup-verify-12-1",
        &ours(),
    )
    .await
    .unwrap();

    assert_eq!(created, Created::New);
    assert_eq!(
        job.metadata.name.as_deref(),
        Some("postgres-backup-verify-12-1")
    );
    let posts: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].path,
        "/apis/batch/v1/namespaces/link-services/jobs"
    );
    let body = posts[0].body.clone().unwrap();
    let cj = fx::cronjob("postgres-backup");
    assert_eq!(body["spec"], cj["spec"]["jobTemplate"]["spec"]);
    assert_eq!(
        body["metadata"]["labels"],
        json!({"app": "postgres-backup", "backup-remediator/incident": "12"})
    );
    assert_eq!(
        body["metadata"]["annotations"],
        json!({"team": "platform", "cronjob.kubernetes.io/instantiate": "manual"})
    );
    assert_eq!(
        body["metadata"]["ownerReferences"],
        json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "postgres-backup",
                "uid": "3f1c9a52-5d7e-4c11-9d0b-1b2c3d4e5f60", "controller": true}])
    );
}

#[tokio::test]
async fn creating_the_same_job_twice_adopts_the_first_one() {
    let kube = KubeServer::start().await;
    kube.put(fx::cronjob("postgres-backup"));
    let client = kube.client();
    let name = "postgres-backup-verify-12-1";
    jobs::create_from_cronjob(&client, fx::NS, "postgres-backup", name, &ours())
        .await
        .unwrap();
    let (_, again) = jobs::create_from_cronjob(&client, fx::NS, "postgres-backup", name, &ours())
        .await
        .unwrap();
    assert_eq!(again, Created::Adopted);
    assert_eq!(
        kube.created_jobs(),
        vec![name, name],
        "two POSTs were tried"
    );
    let api: Api<Job> = Api::namespaced(client, fx::NS);
    assert_eq!(api.list(&Default::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn a_foreign_job_under_our_name_is_refused_not_adopted() {
    let kube = KubeServer::start().await;
    kube.put(fx::cronjob("postgres-backup"));
    let name = "postgres-backup-verify-12-1";
    // Someone else's Job under the name we chose: it carries none of our labels.
    kube.put(fx::job(name, "2026-11-25T02:00:00Z", "active"));

    let out =
        jobs::create_from_cronjob(&kube.client(), fx::NS, "postgres-backup", name, &ours()).await;

    let err = out.expect_err("a Job that is not ours is never adopted");
    let why = err.to_string();
    assert!(
        why.contains(name) && why.contains("backup-remediator/incident=12"),
        "{why}"
    );
    // And another incident's Job under that name is not ours either.
    let mut other = fx::job(name, "2026-11-25T02:00:00Z", "active");
    other["metadata"]["labels"]["backup-remediator/incident"] = json!("13");
    kube.put(other);
    let err = jobs::create_from_cronjob(&kube.client(), fx::NS, "postgres-backup", name, &ours())
        .await
        .expect_err("another incident's Job is not adopted");
    assert!(err.to_string().contains("incident=13"), "{err}");
}

#[tokio::test]
async fn a_missing_cronjob_is_named() {
    let kube = KubeServer::start().await;
    let err = jobs::create_from_cronjob(&kube.client(), fx::NS, "postgres-backup", "x", &ours())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "CronJob postgres-backup does not exist");
}

#[tokio::test]
async fn the_watch_sees_the_job_complete() {
    let kube = KubeServer::start().await;
    kube.put(fx::job(
        "postgres-backup-verify-12-1",
        "2026-11-25T02:00:00Z",
        "active",
    ));
    let api: Api<Job> = Api::namespaced(kube.client(), fx::NS);
    let waiter = tokio::spawn(async move {
        jobs::wait_for(&api, "postgres-backup-verify-12-1", Duration::from_secs(20)).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiter.is_finished(), "the Job is still active");
    kube.finish_job("postgres-backup-verify-12-1", true);
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the watch noticed within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, JobOutcome::Succeeded);
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.query.contains("watch=true")
                && r.query.contains("fieldSelector=metadata.name")),
        "kube-rs watched the Job by name"
    );
}

#[tokio::test]
async fn the_watch_reports_a_failure_with_its_reason() {
    let kube = KubeServer::start().await;
    kube.put(fx::job("j1", "2026-11-25T02:00:00Z", "active"));
    let api: Api<Job> = Api::namespaced(kube.client(), fx::NS);
    let waiter =
        tokio::spawn(async move { jobs::wait_for(&api, "j1", Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    kube.finish_job("j1", false);
    let outcome = waiter.await.unwrap().unwrap();
    assert_eq!(
        outcome,
        JobOutcome::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into()
        }
    );
}

#[tokio::test]
async fn a_job_still_running_at_the_deadline_times_out() {
    let kube = KubeServer::start().await;
    kube.put(fx::job("j1", "2026-11-25T02:00:00Z", "active"));
    let api: Api<Job> = Api::namespaced(kube.client(), fx::NS);
    let started = std::time::Instant::now();
    let outcome = jobs::wait_for(&api, "j1", Duration::from_millis(1500))
        .await
        .unwrap();
    assert!(
        matches!(outcome, JobOutcome::TimedOut { .. }),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the deadline"
    );
}
