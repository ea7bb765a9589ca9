//! What only a real API server can show (tests/it/support/cluster/): the service acting as its
//! own ServiceAccount with deploy/'s RBAC and admission policy applied, in a namespace that
//! enforces the `restricted` Pod Security Standard; Jobs really scheduled (by the node agent),
//! run, and their logs read through the API server.

use std::time::Duration;

use backup_remediator::infra::jobs::{self, Created, JobOutcome};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use serde_json::{json, Value};

use crate::support::cluster::{self, fixtures as fx};

fn ours() -> std::collections::BTreeMap<String, String> {
    [("backup-remediator/incident".to_owned(), "7".to_owned())].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_from_the_cronjob_as_our_service_account_runs_and_its_log_is_read_through_the_api_server(
) {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[
        ("postgres-user", "backup"),
        ("s3-bucket", "link-backups"),
    ]))
    .await;
    ns.put(fx::cronjob(
        "echo \"dumping as $(postgres-user)\"; tr '\\0' '\\n' < /proc/$$$$/environ | grep -c '^postgres-user=backup$'; echo done",
    ))
    .await;
    let service = ns.as_service().await;

    let (job, created) = jobs::create_from_cronjob(
        &service,
        &ns.name,
        "postgres-backup",
        "postgres-backup-verify-7-1",
        &ours(),
    )
    .await
    .expect("our ServiceAccount may create the Job, and the admission policy admits it");
    assert_eq!(created, Created::New);
    let api: Api<Job> = Api::namespaced(service.clone(), &ns.name);
    let outcome = jobs::wait_for(&api, "postgres-backup-verify-7-1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(outcome, JobOutcome::Succeeded, "{job:?}");

    // The pod was scheduled on the node, ran the command with the Secret's keys in its
    // environment, and its log comes back through the API server to our ServiceAccount.
    let pods: Api<Pod> = Api::namespaced(service.clone(), &ns.name);
    let pod = pods
        .list(&ListParams::default().labels("job-name=postgres-backup-verify-7-1"))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(cluster::node::NODE)
    );
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    let log = pods
        .logs(pod.metadata.name.as_deref().unwrap(), &LogParams::default())
        .await
        .expect("pods/log through the API server");
    assert_eq!(
        log, "dumping as backup\n1\ndone\n",
        "the Secret's key is in the environment, and $(VAR) expanded as the kubelet does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_of_a_pod_that_is_not_scheduled_is_empty_not_an_error() {
    let ns = cluster::shared().await.namespace().await;
    let admin_pods: Api<Pod> = Api::namespaced(ns.admin.clone(), &ns.name);
    // A pod of no Job: the node agent binds only Jobs' pods, and there is no scheduler.
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unscheduled", "labels": {"app": "postgres-backup"}},
        "spec": fx::pod_spec("echo never")}))
    .unwrap();
    admin_pods
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(ns.as_service().await, &ns.name);
    let log = pods.logs("unscheduled", &LogParams::default()).await;
    assert_eq!(log.unwrap(), "", "the API server answers 204 with no body");
}

/// A Job as our ServiceAccount would create it, changed by `hostile`.
fn hostile_job(name: &str, hostile: impl FnOnce(&mut Value)) -> Job {
    let mut job = fx::job(name, "echo hi");
    job["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("backup-remediator");
    hostile(&mut job);
    serde_json::from_value(job).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_admission_policy_refuses_each_hostile_job_our_service_account_could_create() {
    let ns = cluster::shared().await.namespace().await;
    let api: Api<Job> = Api::namespaced(ns.as_service().await, &ns.name);
    let pod = "/spec/template/spec";
    type Hostile<'a> = Box<dyn FnOnce(&mut Value) + 'a>;
    let cases: Vec<(&str, Hostile, &str)> = vec![
        (
            "image",
            Box::new(|j| {
                j.pointer_mut(&format!("{pod}/containers/0/image"))
                    .map(|v| *v = json!("registry.example/miner:1"))
                    .unwrap()
            }),
            "images must be in the allowed images",
        ),
        (
            "account",
            Box::new(|j| {
                j.pointer_mut(pod).unwrap()["serviceAccountName"] = json!("cluster-admin-sa")
            }),
            "must run as an allowed ServiceAccount",
        ),
        (
            "secret",
            Box::new(|j| {
                j.pointer_mut(&format!("{pod}/containers/0")).unwrap()["envFrom"] =
                    json!([{"secretRef": {"name": "another-teams-secret"}}])
            }),
            "may read no Secret but the backup Secret",
        ),
        (
            "hostpath",
            Box::new(|j| {
                j.pointer_mut(pod).unwrap()["volumes"] =
                    json!([{"name": "root", "hostPath": {"path": "/"}}])
            }),
            "mount only emptyDir",
        ),
        (
            "hostnetwork",
            Box::new(|j| j.pointer_mut(pod).unwrap()["hostNetwork"] = json!(true)),
            "may not use the node's network",
        ),
        (
            "privileged",
            Box::new(|j| {
                j.pointer_mut(&format!("{pod}/containers/0")).unwrap()["securityContext"] =
                    json!({"privileged": true})
            }),
            "privileged containers",
        ),
        (
            "unowned",
            Box::new(|j| {
                j["metadata"]["labels"]
                    .as_object_mut()
                    .unwrap()
                    .remove("app.kubernetes.io/managed-by");
            }),
            "creates only Jobs owned by the backup CronJob",
        ),
    ];
    for (name, hostile, says) in cases {
        let err = api
            .create(
                &PostParams::default(),
                &hostile_job(&format!("hostile-{name}"), hostile),
            )
            .await
            .expect_err(name);
        let kube::Error::Api(status) = err else {
            panic!("{name}: {err}")
        };
        assert_eq!(status.code, 403, "{name}: {status:?}");
        assert!(
            status
                .message
                .contains("ValidatingAdmissionPolicy 'backup-remediator-jobs'")
                && status.message.contains(says),
            "{name}: {}",
            status.message
        );
    }
    // The same Job without the change is admitted: the refusals are the policy's, not RBAC's.
    api.create(&PostParams::default(), &hostile_job("harmless", |_| {}))
        .await
        .expect("the harmless Job is admitted");

    // The CEL was compiled and type-checked by the server (kube-controller-manager fills this
    // in): no warnings.
    let admin = ns.admin.clone();
    let mut checked = Value::Null;
    for _ in 0..300 {
        let req = http::Request::get(
            "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/backup-remediator-jobs",
        )
        .body(Vec::new())
        .unwrap();
        let policy: Value = admin.request(req).await.unwrap();
        checked = policy["status"].clone();
        if !checked["typeChecking"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !checked["typeChecking"].is_null(),
        "no type check within 30 s: {checked}"
    );
    assert_eq!(
        checked["typeChecking"]["expressionWarnings"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "{checked:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_service_account_cannot_start_a_job_from_another_cronjob() {
    let ns = cluster::shared().await.namespace().await;
    let mut other = fx::cronjob("echo other");
    other["metadata"]["name"] = json!("someone-elses-cronjob");
    ns.put(other).await;
    let err = jobs::create_from_cronjob(
        &ns.as_service().await,
        &ns.name,
        "someone-elses-cronjob",
        "stolen-1",
        &ours(),
    )
    .await
    .expect_err("RBAC grants `get` on the backup CronJob by name only");
    assert!(err.to_string().contains("forbidden"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_watch_the_api_server_closes_is_resumed_until_the_job_finishes() {
    let cluster = cluster::shared().await;
    let ns = cluster.namespace().await;
    ns.put(fx::secret(&[])).await;
    // Longer than one watch window (10 s): the server ends the first watch before the Job ends.
    ns.put(fx::cronjob("sleep 14; echo slow but done")).await;
    let service = ns.as_service().await;
    jobs::create_from_cronjob(&service, &ns.name, "postgres-backup", "slow-1", &ours())
        .await
        .unwrap();
    let api: Api<Job> = Api::namespaced(service, &ns.name);
    let outcome = jobs::wait_for(&api, "slow-1", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(outcome, JobOutcome::Succeeded);
    let watches = cluster
        .service_requests(&ns.name)
        .into_iter()
        .filter(|(verb, resource, _, _)| verb == "watch" && resource == "jobs")
        .count();
    assert!(
        watches >= 2,
        "one watch was closed by the server and a new one started: {watches}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_service_account_deletes_only_the_jobs_it_created() {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[])).await;
    ns.put(fx::cronjob(&ns.held())).await;
    // The team's own backup Job, as the CronJob scheduled it.
    ns.put(fx::job("postgres-backup-29002440", &ns.held()))
        .await;
    let service = ns.as_service().await;
    let api: Api<Job> = Api::namespaced(service.clone(), &ns.name);

    let err = api
        .delete("postgres-backup-29002440", &Default::default())
        .await
        .expect_err("not ours");
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 403);
    assert!(
        status
            .message
            .contains("ValidatingAdmissionPolicy 'backup-remediator-job-deletes'"),
        "{}",
        status.message
    );

    jobs::create_from_cronjob(&service, &ns.name, "postgres-backup", "ours-1", &ours())
        .await
        .unwrap();
    api.delete("ours-1", &Default::default())
        .await
        .expect("a Job it created");
    ns.release("postgres-backup-29002440", true);
}
