//! The CloudNativePG source against the test cluster's real API server: `Cluster`, `Backup` and
//! `ScheduledBackup` objects (CRDs of our own, `support/cluster/crds/`; CloudNativePG's operator
//! does not run, so the tests write the objects and their status as it would) read by the
//! `cloudnativepg` probe as the service's ServiceAccount, with and without deploy/'s
//! `components/cloudnativepg` grant.

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::domain::finding::{Signal, Status};
use backup_remediator::probes::cloudnativepg::CloudNativePg;
use backup_remediator::probes::{Probe, ProbeContext};
use chrono::Utc;
use serde_json::{json, Value};

use crate::support::cluster::{self, crds, TestNamespace};

const CLUSTER: &str = "ledger-db";

/// A namespace with the CRDs served, and deploy/'s cloudnativepg component granted in it when
/// `granted`.
async fn namespace(granted: bool) -> TestNamespace {
    let c = cluster::shared().await;
    crds::cloudnativepg(c).await;
    let ns = c.namespace().await;
    if granted {
        for mut obj in cluster::render("deploy/components/cloudnativepg").unwrap() {
            obj["metadata"]["namespace"] = json!(ns.name);
            ns.put(obj).await;
        }
    }
    ns
}

async fn ctx(ns: &TestNamespace) -> Arc<ProbeContext> {
    let settings = Settings::from_toml(&format!(
        "[kubernetes]\n{}[backup]\nsource = \"cloudnativepg\"\n[cloudnativepg]\ncluster = \"{CLUSTER}\"\n",
        ns.kubernetes_toml()
    ))
    .unwrap();
    Arc::new(ProbeContext::new(
        Arc::new(settings),
        Some(ns.as_service().await),
        reqwest::Client::new(),
    ))
}

fn ago(hours: i64) -> String {
    (Utc::now() - chrono::Duration::hours(hours)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({ "type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": ago(0) })
}

fn cnpg_cluster(conditions: Vec<Value>, last_success: &str) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": { "name": CLUSTER },
        "spec": { "instances": 3, "backup": { "barmanObjectStore": { "destinationPath": "s3://ledger/" } } },
        "status": { "conditions": conditions, "lastSuccessfulBackup": last_success,
                    "firstRecoverabilityPoint": ago(72) },
    })
}

fn backup(name: &str, cluster: &str, status: Value) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
        "metadata": { "name": name },
        "spec": { "cluster": { "name": cluster }, "method": "barmanObjectStore" },
        "status": status,
    })
}

fn scheduled(name: &str, suspend: bool) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup",
        "metadata": { "name": name },
        "spec": { "cluster": { "name": CLUSTER }, "schedule": "0 0 2 * * *", "suspend": suspend },
    })
}

/// Creation times have a resolution of a second: the next object is plainly newer.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_archiving_a_failed_newest_backup_and_a_suspended_schedule_are_each_named() {
    let ns = namespace(true).await;
    let archive_message = "unexpected failure invoking barman-cloud-wal-archive: exit status 4 \
                           (AccessDenied: the access key was revoked)";
    ns.put(cnpg_cluster(
        vec![
            condition(
                "ContinuousArchiving",
                "False",
                "ContinuousArchivingFailing",
                archive_message,
            ),
            condition(
                "LastBackupSucceeded",
                "False",
                "LastBackupFailed",
                "exit status 4",
            ),
        ],
        &ago(2),
    ))
    .await;
    ns.put(backup(
        "ledger-db-20261207",
        CLUSTER,
        json!({
        "phase": "completed", "startedAt": ago(3), "stoppedAt": ago(2) }),
    ))
    .await;
    next_second().await;
    ns.put(backup(
        "ledger-db-20261208",
        CLUSTER,
        json!({
        "phase": "failed", "startedAt": ago(0),
        "error": "can't upload the base backup: AccessDenied" }),
    ))
    .await;
    next_second().await;
    // Newer, but another Cluster's: not this one's newest.
    ns.put(backup(
        "other-db-20261208",
        "other-db",
        json!({
        "phase": "completed", "stoppedAt": ago(0) }),
    ))
    .await;
    ns.put(scheduled("ledger-db-nightly", true)).await;

    let out = CloudNativePg.run(ctx(&ns).await).await;

    assert_eq!(out.status, Status::Problem, "{}", out.summary);
    assert_eq!(
        out.signals,
        vec![
            Signal::ClusterArchivingFailing {
                cluster: CLUSTER.into(),
                reason: "ContinuousArchivingFailing".into(),
                message: archive_message.into(),
            },
            Signal::ClusterBackupFailed {
                cluster: CLUSTER.into(),
                backup: "ledger-db-20261208".into(),
                error: "can't upload the base backup: AccessDenied".into(),
            },
            Signal::ScheduledBackupSuspended {
                scheduled_backup: "ledger-db-nightly".into(),
            },
        ]
    );
    for words in [
        "CloudNativePG Cluster ledger-db: WAL archiving is failing (ContinuousArchiving False, \
         ContinuousArchivingFailing): unexpected failure invoking barman-cloud-wal-archive",
        "the newest Backup ledger-db-20261208 of CloudNativePG Cluster ledger-db failed: can't \
         upload the base backup: AccessDenied",
        "ScheduledBackup ledger-db-nightly is suspended",
        "LastBackupSucceeded is False: exit status 4",
    ] {
        assert!(
            out.summary.contains(words),
            "{words}\nnot in: {}",
            out.summary
        );
    }
    assert_eq!(
        out.evidence["backups"], 2,
        "the other Cluster's is not counted"
    );
    assert_eq!(out.evidence["newest_backup"]["phase"], "failed");
    assert_eq!(out.evidence["scheduled_backups"][0]["suspend"], true);
    // Three reads and nothing else, as the API server's audit log recorded them.
    let mut asked = ns.cluster.service_requests(&ns.name);
    asked.sort();
    let read = |verb: &str, resource: &str, name: &str| {
        (verb.to_owned(), resource.to_owned(), name.to_owned(), 200)
    };
    assert_eq!(
        asked,
        [
            read("get", "clusters", CLUSTER),
            read("list", "backups", ""),
            read("list", "scheduledbackups", ""),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_with_a_fresh_completed_backup_is_ok_and_an_old_one_is_stale() {
    let ns = namespace(true).await;
    let healthy = vec![
        condition(
            "ContinuousArchiving",
            "True",
            "ContinuousArchivingSuccess",
            "",
        ),
        condition("LastBackupSucceeded", "True", "LastBackupSucceeded", ""),
    ];
    ns.put(cnpg_cluster(healthy, &ago(1))).await;
    ns.put(backup(
        "ledger-db-1",
        CLUSTER,
        json!({
        "phase": "completed", "startedAt": ago(2), "stoppedAt": ago(1) }),
    ))
    .await;
    ns.put(scheduled("ledger-db-nightly", false)).await;

    let out = CloudNativePg.run(ctx(&ns).await).await;

    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    assert_eq!(
        out.summary,
        "Cluster ledger-db: newest completed backup 1 h old"
    );
    assert_eq!(
        out.evidence["conditions"]["ContinuousArchiving"]["status"],
        "True"
    );

    // The operator's status and the Backup both 30 h old: older than the RPO (24 h).
    ns.put(cnpg_cluster(Vec::new(), &ago(30))).await;
    ns.put(backup(
        "ledger-db-1",
        CLUSTER,
        json!({ "stoppedAt": ago(30) }),
    ))
    .await;
    let out = CloudNativePg.run(ctx(&ns).await).await;
    assert_eq!(
        out.signals,
        vec![Signal::ClusterBackupStale {
            cluster: CLUSTER.into(),
            age_seconds: out.evidence["newest_completed_age_seconds"].as_i64(),
            rpo_hours: 24,
        }],
        "{}",
        out.summary
    );
    assert!(
        out.summary.starts_with(
            "the newest completed backup of CloudNativePG Cluster ledger-db is 30 h old (RPO 24 h)"
        ),
        "{}",
        out.summary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_deploys_cloudnativepg_component_the_finding_names_the_missing_permission() {
    let ns = namespace(false).await;
    ns.put(cnpg_cluster(Vec::new(), &ago(1))).await;

    let out = CloudNativePg.run(ctx(&ns).await).await;

    assert_eq!(out.status, Status::Error, "{}", out.summary);
    assert_eq!(
        out.summary,
        format!(
            "the service's ServiceAccount may not get clusters.postgresql.cnpg.io in namespace \
             {} (403 Forbidden): grant deploy/components/cloudnativepg",
            ns.name
        )
    );
}
