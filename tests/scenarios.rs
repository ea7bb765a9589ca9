//! End to end, one test per runbook scenario plus the transient case: the systems are put in
//! that broken state — the real PostgreSQL (a backup role of the test's own), the real Prometheus
//! (scraping backup and volume metrics the test serves), moto's S3 and IAM (a bucket holding a
//! real `pg_dump -Fc` archive encrypted by the real `openssl enc`), and the stand-in Kubernetes
//! API (Secret, backup Job with its pod and logs, the primary, the PVC) — a real alert is posted
//! to the running service, and the diagnosis it stores must name the right scenario for the
//! right reasons.

#[path = "support/kube_server.rs"]
mod kube_server;
#[path = "support/moto.rs"]
mod moto;
#[path = "support/pg.rs"]
mod pg;
#[path = "support/procs.rs"]
mod procs;

use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::startup::Application;
use kube_server::{fixtures as fx, KubeServer};
use serde_json::{json, Value};

const BUCKET: &str = "link-backups";
const KEY: &str = "current-encryption-key-0123456789abcdef";
const HOOK: &str = "scenario-hook-token";
const API: &str = "scenario-api-token";
const PVC: &str = "postgres-data-postgres-primary-0";

/// What to break.
#[derive(Clone, Copy, PartialEq)]
enum Break {
    Nothing,
    Connection,
    Authentication,
    Storage,
    S3,
    Encryption,
}

/// Everything the service looks at, in the state `broken` asks for, and the service itself.
struct World {
    base: String,
    client: reqwest::Client,
    kube: KubeServer,
    _moto: moto::Moto,
    _prom: procs::Daemon,
    _pg: pg::Scratch,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn world(broken: Break, job_log: &str) -> World {
    backup_remediator::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pg = pg::Scratch::create(&["users", "chat"]).await;
    pg.sql(
        "postgres",
        &format!("GRANT pg_read_all_data TO {}", pg.role),
    )
    .await;

    // S3 and IAM: a bucket with a real encrypted backup, the backup user and its policy.
    let moto = moto::Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put(
        BUCKET,
        "postgres-backups/postgres-backup-20261124_020000_link_users.sql.enc",
        pg::real_backup(dir.path(), KEY),
    )
    .await;
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": format!("arn:aws:s3:::{BUCKET}/postgres-backups/*")},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{BUCKET}")}
    ]});
    let job_creds = moto
        .user_with_policy("postgres-backup-user", "postgres-backup-policy", &policy)
        .await;

    // Kubernetes: the Secret, the failed backup Job and its pod's log, the primary, the volume.
    let kube = KubeServer::start().await;
    let user = if broken == Break::Authentication {
        "backup_role_gone"
    } else {
        pg.role.as_str()
    };
    let bucket = if broken == Break::S3 {
        "link-backups-deleted"
    } else {
        BUCKET
    };
    let key = if broken == Break::Encryption {
        "short-key"
    } else {
        KEY
    };
    kube.put(fx::secret(
        "postgres-backup-secret",
        &[
            ("postgres-user", user),
            ("postgres-password", pg.password.as_str()),
            ("s3-bucket", bucket),
            ("encryption-key", key),
            ("aws-access-key-id", job_creds.access_key_id()),
            ("aws-secret-access-key", job_creds.secret_access_key()),
        ],
    ));
    kube.put(fx::job(
        "postgres-backup-29001000",
        "2026-11-23T02:00:00Z",
        "succeeded",
    ));
    kube.put(fx::job(
        "postgres-backup-29002440",
        "2026-11-24T02:00:00Z",
        "failed",
    ));
    let pod = "postgres-backup-29002440-x7k2p";
    kube.put(fx::job_pod(
        pod,
        "postgres-backup-29002440",
        "2026-11-24T02:00:01Z",
        "error",
    ));
    kube.set_log(fx::NS, pod, job_log);
    let primary_ready = broken != Break::Connection;
    kube.put(fx::statefulset(
        "postgres-primary",
        i32::from(primary_ready),
    ));
    kube.put(fx::primary_pod(
        "postgres-primary-0",
        "postgres-primary",
        primary_ready,
    ));
    kube.put(fx::endpoints(
        "postgres-primary",
        if primary_ready { &["10.0.0.5"] } else { &[] },
    ));
    kube.put(fx::pvc(PVC, "gp3", "100Gi"));
    kube.put(fx::storage_class("gp3", true));

    // Prometheus: the backup's own metrics (last success 30 h ago) and the data volume.
    let used = if broken == Break::Storage { 95.0 } else { 40.0 };
    let last = chrono::Utc::now().timestamp() - 30 * 3600;
    let exporter = procs::exporter(move || {
        let gib = 1024.0f64.powi(3);
        format!(
            "postgres_backup_last_success_timestamp {last}\npostgres_backup_errors_total 1\n\
             kubelet_volume_stats_used_bytes{{namespace=\"{ns}\",persistentvolumeclaim=\"{PVC}\"}} {u}\n\
             kubelet_volume_stats_capacity_bytes{{namespace=\"{ns}\",persistentvolumeclaim=\"{PVC}\"}} {c}\n",
            ns = fx::NS,
            u = used * gib,
            c = 100.0 * gib
        )
    })
    .await;
    let (prom, prom_url) = procs::prometheus(dir.path(), &[exporter.to_string()], None, None).await;
    procs::wait_for_series(&prom_url, "kubelet_volume_stats_capacity_bytes").await;

    // The service, on an embedded store, pointed at all of it.
    let pg_port = if broken == Break::Connection {
        procs::free_port()
    } else {
        5432
    };
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [database]
        url = "sqlite:{store}"
        [auth]
        webhook_token = "{HOOK}"
        api_token = "{API}"
        [probes]
        deadline_ms = 10000
        [prometheus]
        url = "{prom_url}"
        [kubernetes]
        api_url = "{kube}"
        [target]
        host = "127.0.0.1"
        port = {pg_port}
        databases = ["{db0}", "{db1}"]
        connect_timeout_ms = 2000
        [s3]
        endpoint = "{moto}"
        force_path_style = true
        region = "us-east-1"
        [iam]
        endpoint = "{moto}"
        access_key_id = "{admin_id}"
        secret_access_key = "{admin_secret}"
        "#,
        store = dir.path().join("incidents.sqlite").display(),
        kube = kube.url,
        db0 = pg.dbs[0],
        db1 = pg.dbs[1],
        moto = moto.url,
        admin_id = moto::admin_credentials().access_key_id(),
        admin_secret = moto::admin_credentials().secret_access_key(),
    );
    let settings = Settings::from_toml(&toml).unwrap();
    let app = Application::build(settings).await.expect("service starts");
    let base = format!("http://{}", app.local_addr());
    let task = tokio::spawn(async move {
        app.run_until(std::future::pending()).await.ok();
    });
    World {
        base,
        client: reqwest::Client::new(),
        kube,
        _moto: moto,
        _prom: prom,
        _pg: pg,
        _dir: dir,
        task,
    }
}

impl World {
    /// Posts the alert as Alertmanager would and waits (bounded) for the stored diagnosis.
    async fn alert_and_diagnose(&self) -> Value {
        let body = json!({
            "receiver": "backup-remediator", "status": "firing", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "externalURL": "http://alertmanager:9093",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "alerts": [{"status": "firing",
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": "link-services"},
                "annotations": {"summary": "PostgreSQL backup failed"},
                "startsAt": "2026-11-24T02:30:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph", "fingerprint": "5c0e2a1b9d8f7e61"}]
        });
        let resp = self
            .client
            .post(format!("{}/webhook/alertmanager", self.base))
            .bearer_auth(HOOK)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let id = resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
            .as_i64()
            .unwrap();
        for _ in 0..300 {
            let incident: Value = self
                .client
                .get(format!("{}/api/v1/incidents/{id}", self.base))
                .bearer_auth(API)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !incident["diagnosis"].is_null() {
                return incident;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no diagnosis within 30 s");
    }
}

fn finding<'a>(incident: &'a Value, probe: &str) -> &'a Value {
    incident["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["probe"] == probe)
        .unwrap_or_else(|| panic!("no {probe} finding"))
}

fn evidence_texts(incident: &Value) -> Vec<String> {
    incident["diagnosis"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "[{} {}] {}",
                e["kind"].as_str().unwrap(),
                e["probe"].as_str().unwrap(),
                e["text"].as_str().unwrap()
            )
        })
        .collect()
}

fn assert_scenario(incident: &Value, scenario: &str, direct: &str, log: &str) {
    let d = &incident["diagnosis"];
    let ev = evidence_texts(incident);
    assert_eq!(
        d["scenario"], scenario,
        "{}\nevidence: {ev:#?}",
        d["summary"]
    );
    assert_eq!(
        d["confidence"], 0.95,
        "a probe and the job's log agree: {ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.starts_with("[direct") && e.contains(direct)),
        "no direct evidence containing {direct:?}: {ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.starts_with("[log backup_job]") && e.contains(log)),
        "no log evidence containing {log:?}: {ev:#?}"
    );
    assert_eq!(
        incident["findings"].as_array().unwrap().len(),
        9,
        "every probe reported"
    );
    assert!(
        d["context"].as_array().unwrap().iter().any(|c| c
            .as_str()
            .unwrap()
            .starts_with("last successful backup 30 h")),
        "the RPO exposure is part of the diagnosis: {}",
        d["context"]
    );
}

const FAILED_DUMP: &str = "Starting backup of link_users\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_a_refused_database_connection() {
    let w = world(
        Break::Connection,
        &format!("{FAILED_DUMP}pg_dump: error: connection to server at \"postgres-primary.link-services.svc.cluster.local\" (10.0.0.5), port 5432 failed: Connection refused\n"),
    )
    .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "database_connection",
        "refused the connection",
        "Connection refused",
    );
    assert_eq!(finding(&incident, "primary")["status"], "problem");
    assert!(finding(&incident, "primary")["summary"]
        .as_str()
        .unwrap()
        .contains("0/1 ready replicas"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_the_backup_role_does_not_exist() {
    let w = world(
        Break::Authentication,
        &format!("{FAILED_DUMP}pg_dump: error: connection to server at \"postgres-primary\" (10.0.0.5), port 5432 failed: FATAL:  role \"backup_role_gone\" does not exist\n"),
    )
    .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "authentication",
        "role backup_role_gone does not exist",
        "does not exist",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_the_data_volume_is_full() {
    let w = world(Break::Storage, &format!("{FAILED_DUMP}pg_dump: error: could not write to output file: No space left on device\n")).await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "storage",
        "is 95% full",
        "No space left on device",
    );
    assert_eq!(
        finding(&incident, "disk")["evidence"]["claim"]["expandable"],
        true,
        "expansion is possible (for the playbook)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_the_bucket_is_gone() {
    let w = world(
        Break::S3,
        &format!("{FAILED_DUMP}Encrypting backup\nupload failed: An error occurred (NoSuchBucket) when calling the PutObject operation: The specified bucket does not exist\n"),
    )
    .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "s3_access",
        "bucket link-backups-deleted does not exist",
        "NoSuchBucket",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_the_encryption_key_is_too_short() {
    let w = world(
        Break::Encryption,
        &format!("{FAILED_DUMP}encryption failed: key shorter than 32 bytes\n"),
    )
    .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "encryption",
        "the encryption key is 9 bytes",
        "encryption failed",
    );
    assert!(
        !incident.to_string().contains("short-key"),
        "the key itself never reaches the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_nothing_explains_is_transient_and_every_probe_is_healthy() {
    let w = world(Break::Nothing, &format!("{FAILED_DUMP}pg_dump: error: could not receive data from server: Connection reset by peer\n")).await;
    let incident = w.alert_and_diagnose().await;
    let d = &incident["diagnosis"];
    assert_eq!(d["scenario"], "transient_unknown", "{}", d["summary"]);
    assert_eq!(d["confidence"], 0.7);
    for probe in [
        "secret",
        "database",
        "primary",
        "disk",
        "s3",
        "iam",
        "encryption",
    ] {
        assert_eq!(
            finding(&incident, probe)["status"],
            "ok",
            "{probe}: {}",
            finding(&incident, probe)["summary"]
        );
    }
    let enc = finding(&incident, "encryption");
    assert_eq!(
        enc["evidence"]["newest_backup"]["decrypts_to_pg_dump"], true,
        "the newest real backup decrypts: {enc}"
    );
    assert!(
        enc["summary"]
            .as_str()
            .unwrap()
            .contains("decrypts to a pg_dump archive"),
        "{enc}"
    );
    assert_eq!(
        finding(&incident, "backup_job")["status"],
        "problem",
        "the Job did fail"
    );
    // What kube-rs asked the API server: the Job list by selector, then the newest pod's last 100 lines.
    let reqs = w.kube.requests();
    assert!(reqs
        .iter()
        .any(|r| r.path == "/apis/batch/v1/namespaces/link-services/jobs"
            && r.query.contains("labelSelector=app%3Dpostgres-backup")));
    assert!(reqs.iter().any(|r| r.path
        == "/api/v1/namespaces/link-services/pods/postgres-backup-29002440-x7k2p/log"
        && r.query.contains("tailLines=100")));
    assert!(
        reqs.iter().all(|r| r.method == "GET"),
        "diagnosis changes nothing in the cluster"
    );
}
