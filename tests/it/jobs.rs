//! Backup Jobs through kube-rs against the test cluster's real API server, as the service's
//! ServiceAccount: the Job created from the CronJob is the one `kubectl create job
//! --from=cronjob/…` would make, a second creation adopts it, and the watch sees the Job (really
//! run by the node agent) finish, or gives up at the deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use backup_remediator::infra::jobs::{self, Created, JobOutcome};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::Api;
use serde_json::json;

use crate::support::cluster::{self, fixtures as fx, TestNamespace};

fn ours() -> BTreeMap<String, String> {
    BTreeMap::from([("backup-remediator/incident".to_owned(), "12".to_owned())])
}

/// A namespace with the backup Secret and the CronJob, its Jobs held until released.
async fn with_cronjob() -> TestNamespace {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[])).await;
    ns.put(fx::cronjob(&ns.held())).await;
    ns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_from_the_cronjob_has_its_template_owner_and_annotation() {
    let ns = with_cronjob().await;
    let service = ns.as_service().await;

    let (job, created) = jobs::create_from_cronjob(
        &service,
        &ns.name,
        "postgres-backup",
        "postgres-backup-verify-12-1",
        &ours(),
    )
    .await
    .unwrap();

    assert_eq!(created, Created::New);
    // As the server stored it (defaults filled in on both alike).
    let stored: Job = Api::namespaced(ns.admin.clone(), &ns.name)
        .get("postgres-backup-verify-12-1")
        .await
        .unwrap();
    let cj: CronJob = Api::namespaced(ns.admin.clone(), &ns.name)
        .get("postgres-backup")
        .await
        .unwrap();
    let template = cj.spec.unwrap().job_template.spec.unwrap();
    let spec = stored.spec.clone().unwrap();
    assert_eq!(spec.template.spec, template.template.spec);
    assert_eq!(spec.backoff_limit, template.backoff_limit);
    assert_eq!(
        spec.active_deadline_seconds,
        template.active_deadline_seconds
    );
    let meta = serde_json::to_value(&stored.metadata).unwrap();
    assert_eq!(
        meta["labels"],
        json!({"app": "postgres-backup", "backup-remediator/incident": "12"})
    );
    assert_eq!(
        meta["annotations"],
        json!({"team": "platform", "cronjob.kubernetes.io/instantiate": "manual"})
    );
    assert_eq!(
        meta["ownerReferences"],
        json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "postgres-backup",
                "uid": cj.metadata.uid.unwrap(), "controller": true}])
    );
    assert_eq!(job.metadata.uid, stored.metadata.uid);
    ns.release("postgres-backup-verify-12-1", true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_same_job_twice_adopts_the_first_one() {
    let ns = with_cronjob().await;
    let service = ns.as_service().await;
    let name = "postgres-backup-verify-12-1";
    jobs::create_from_cronjob(&service, &ns.name, "postgres-backup", name, &ours())
        .await
        .unwrap();
    let (_, again) =
        jobs::create_from_cronjob(&service, &ns.name, "postgres-backup", name, &ours())
            .await
            .unwrap();
    assert_eq!(again, Created::Adopted);
    let creates: Vec<_> = ns
        .cluster
        .service_requests(&ns.name)
        .into_iter()
        .filter(|(verb, resource, ..)| verb == "create" && resource == "jobs")
        .map(|(.., code)| code)
        .collect();
    assert_eq!(
        creates,
        [201, 409],
        "two creations were tried; the server refused the second"
    );
    assert_eq!(ns.jobs().await.len(), 1);
    ns.release(name, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_job_under_our_name_is_refused_not_adopted() {
    let ns = with_cronjob().await;
    let service = ns.as_service().await;
    let name = "postgres-backup-verify-12-1";
    // Someone else's Job under the name we chose: it carries none of our labels.
    ns.put(fx::job(name, &ns.held())).await;

    let out = jobs::create_from_cronjob(&service, &ns.name, "postgres-backup", name, &ours()).await;

    let err = out.expect_err("a Job that is not ours is never adopted");
    let why = err.to_string();
    assert!(
        why.contains(name) && why.contains("backup-remediator/incident=12"),
        "{why}"
    );
    // And another incident's Job under that name is not ours either.
    let mut other = fx::job("postgres-backup-verify-12-2", &ns.held());
    other["metadata"]["labels"]["backup-remediator/incident"] = json!("13");
    ns.put(other).await;
    let err = jobs::create_from_cronjob(
        &service,
        &ns.name,
        "postgres-backup",
        "postgres-backup-verify-12-2",
        &ours(),
    )
    .await
    .expect_err("another incident's Job is not adopted");
    assert!(err.to_string().contains("incident=13"), "{err}");
    ns.release(name, true);
    ns.release("postgres-backup-verify-12-2", true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cronjob_is_named() {
    let ns = cluster::shared().await.namespace().await;
    let err = jobs::create_from_cronjob(
        &ns.as_service().await,
        &ns.name,
        "postgres-backup",
        "x",
        &ours(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "CronJob postgres-backup does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_sees_the_job_complete() {
    let ns = with_cronjob().await;
    ns.put(fx::job("postgres-backup-verify-12-1", &ns.held()))
        .await;
    ns.wait_active("postgres-backup-verify-12-1").await;
    let api: Api<Job> = Api::namespaced(ns.as_service().await, &ns.name);
    let waiter = tokio::spawn(async move {
        jobs::wait_for(&api, "postgres-backup-verify-12-1", Duration::from_secs(30)).await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiter.is_finished(), "the Job is still active");
    ns.release("postgres-backup-verify-12-1", true);
    let outcome = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the watch noticed within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, JobOutcome::Succeeded);
    assert!(
        ns.cluster
            .service_requests(&ns.name)
            .iter()
            .any(|(verb, resource, ..)| verb == "watch" && resource == "jobs"),
        "kube-rs watched the Job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_reports_a_failure_with_its_reason() {
    let ns = with_cronjob().await;
    ns.put(fx::job("j1", &ns.held())).await;
    let api: Api<Job> = Api::namespaced(ns.as_service().await, &ns.name);
    let waiter =
        tokio::spawn(async move { jobs::wait_for(&api, "j1", Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ns.release("j1", false);
    let outcome = waiter.await.unwrap().unwrap();
    // As the Job controller words it (backoffLimit 0: the first failed pod ends the Job).
    assert_eq!(
        outcome,
        JobOutcome::Failed {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_at_the_deadline_times_out() {
    let ns = with_cronjob().await;
    ns.put(fx::job("j1", &ns.held())).await;
    let api: Api<Job> = Api::namespaced(ns.as_service().await, &ns.name);
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
    ns.release("j1", true);
}
