//! The world of the end-to-end tests (shared by `scenarios` and `gate`): the real PostgreSQL,
//! Prometheus and moto, the stand-in Kubernetes API, each in the state a test breaks it into, and
//! the service itself (in this process, or binaries on one PostgreSQL store).
#![allow(dead_code)]

use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::startup::Application;
use serde_json::{json, Value};

use crate::kube_server::{fixtures as fx, KubeServer};
use crate::{moto, pg, procs};

#[path = "world_checks.rs"]
mod checks;
pub use checks::*;

pub const BUCKET: &str = "link-backups";
pub const KEY: &str = "current-encryption-key-0123456789abcdef";
pub const HOOK: &str = "scenario-hook-token";
pub const API: &str = "scenario-api-token";
pub const PVC: &str = "postgres-data-postgres-primary-0";
pub const ADMIN: &str = "scenario-admin-token";

/// What to break.
#[derive(Clone, Copy, PartialEq)]
pub enum Break {
    Nothing,
    Connection,
    Authentication,
    Storage,
    S3,
    Encryption,
}

/// Everything the service looks at, in the state `broken` asks for, and the service itself.
pub struct World {
    pub base: String,
    pub client: reqwest::Client,
    pub kube: KubeServer,
    pub moto: moto::Moto,
    pub _prom: procs::Daemon,
    pub pg: pg::Scratch,
    pub dir: tempfile::TempDir,
    /// The service: in this process, or binaries (killed on drop).
    pub task: Option<tokio::task::JoinHandle<()>>,
    pub processes: Vec<procs::Daemon>,
    /// Base URL of each binary, in start order.
    pub bases: Vec<String>,
    /// The service's config file, for binaries started later.
    pub config: std::path::PathBuf,
    /// The service's settings (as in `config`).
    pub settings: Settings,
    /// The in-process service's freshness watchdog, for tests that check chosen periods.
    pub watchdog: Option<std::sync::Arc<backup_remediator::watchdog::Watchdog>>,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        for p in &mut self.processes {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// How the service is run and what it may do.
#[derive(Clone, Copy, Default)]
pub struct Opts<'a> {
    /// Policy file contents; `None`: no policy file (dry run).
    pub policy: Option<&'a str>,
    /// More settings (TOML), e.g. a `[remediation]` section.
    pub remediation: &'a str,
    /// 0: in this process on SQLite; n: n binaries on one PostgreSQL store.
    pub processes: usize,
    /// The Secret's backup role for `Break::Authentication`.
    pub gone_role: Option<&'a str>,
    /// No service at all: the test drives the library itself on the PostgreSQL store.
    pub no_service: bool,
    /// Run the freshness watchdog's loop (off by default: tests that want it check periods
    /// through [`World::watchdog`]).
    pub watchdog: bool,
    /// moto reports objects whose key holds `aged<N>h` as N hours old ([`moto::Moto::start_aging`]).
    pub aging_moto: bool,
    /// The backup job exports no metrics (a CronJob that stopped running).
    pub no_backup_metrics: bool,
}

pub async fn world(broken: Break, job_log: &str) -> World {
    world_with(broken, job_log, Opts::default()).await
}

pub async fn world_with(broken: Break, job_log: &str, opts: Opts<'_>) -> World {
    backup_remediator::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pg = pg::Scratch::create(&["users", "chat", "store"]).await;
    pg.sql(
        "postgres",
        &format!("GRANT pg_read_all_data TO {}", pg.role),
    )
    .await;

    // S3 and IAM: a bucket with a real encrypted backup, the backup user and its policy.
    let moto = if opts.aging_moto {
        moto::Moto::start_aging().await
    } else {
        moto::Moto::start().await
    };
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
        opts.gone_role.unwrap_or("backup_role_gone")
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
    kube.put(fx::cronjob("postgres-backup"));
    kube.put(fx::storage_class("gp3", true));

    // Prometheus: the backup's own metrics (last success 30 h ago) and the data volume.
    let used = if broken == Break::Storage { 95.0 } else { 40.0 };
    let last = chrono::Utc::now().timestamp() - 30 * 3600;
    let backup_metrics = if opts.no_backup_metrics {
        String::new()
    } else {
        format!("postgres_backup_last_success_timestamp {last}\npostgres_backup_errors_total 1\n")
    };
    let exporter = procs::exporter(move || {
        let gib = 1024.0f64.powi(3);
        format!(
            "{backup_metrics}kubelet_volume_stats_used_bytes{{namespace=\"{ns}\",persistentvolumeclaim=\"{PVC}\"}} {u}\n\
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
    let store_url = if opts.processes == 0 && !opts.no_service {
        format!("sqlite:{}", dir.path().join("incidents.sqlite").display())
    } else {
        let admin = pg::admin_url();
        format!("{}/{}", admin.rsplit_once('/').unwrap().0, pg.dbs[2])
    };
    let policy_file = match opts.policy {
        Some(text) => {
            let path = dir.path().join("policy.toml");
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
        None => String::new(),
    };
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        [database]
        url = "{store_url}"
        [auth]
        webhook_token = "{HOOK}"
        api_token = "{API}"
        admin_token = "{ADMIN}"
        [remediation]
        policy_file = "{policy_file}"
        admin_database_url = "{admin_url}"
        job_deadline_seconds = 60
        database_wait_seconds = 2
        {remediation}
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
        [watchdog]
        enabled = {watchdog}
        "#,
        watchdog = opts.watchdog,
        admin_url = pg::admin_url(),
        remediation = opts.remediation,
        kube = kube.url,
        db0 = pg.dbs[0],
        db1 = pg.dbs[1],
        moto = moto.url,
        admin_id = moto::admin_credentials().access_key_id(),
        admin_secret = moto::admin_credentials().secret_access_key(),
    );
    let settings = Settings::from_toml(&toml).unwrap();
    let config = dir.path().join("service.toml");
    std::fs::write(&config, &toml).unwrap();
    let mut w = World {
        base: String::new(),
        client: reqwest::Client::new(),
        kube,
        moto,
        _prom: prom,
        pg,
        dir,
        task: None,
        processes: Vec::new(),
        bases: Vec::new(),
        config,
        settings: settings.clone(),
        watchdog: None,
    };
    if opts.no_service {
        return w;
    }
    if opts.processes == 0 {
        let app = Application::build(settings).await.expect("service starts");
        w.base = format!("http://{}", app.local_addr());
        w.watchdog = Some(app.watchdog());
        w.task = Some(tokio::spawn(async move {
            app.run_until(std::future::pending()).await.ok();
        }));
    } else {
        for _ in 0..opts.processes {
            let base = w.start_process().await;
            if w.base.is_empty() {
                w.base = base;
            }
        }
    }
    w
}

impl World {
    /// Posts the alert as Alertmanager would and waits (bounded) for the stored diagnosis.
    pub async fn alert_and_diagnose(&self) -> Value {
        let id = self.alert(&self.base, "2026-11-24T02:30:00Z").await;
        self.wait_for(id, "a diagnosis", |i| !i["diagnosis"].is_null())
            .await
    }

    /// Posts the alert (started at `starts_at`) to the service at `base`; the incident id.
    pub async fn alert(&self, base: &str, starts_at: &str) -> i64 {
        let body = json!({
            "receiver": "backup-remediator", "status": "firing", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "externalURL": "http://alertmanager:9093",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "alerts": [{"status": "firing",
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": "link-services"},
                "annotations": {"summary": "PostgreSQL backup failed"},
                "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph", "fingerprint": "5c0e2a1b9d8f7e61"}]
        });
        let resp = self
            .client
            .post(format!("{base}/webhook/alertmanager"))
            .bearer_auth(HOOK)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
            .as_i64()
            .unwrap()
    }

    /// Posts the alert's resolution (it started at `starts_at`) to the service at `base`.
    pub async fn resolve(&self, base: &str, starts_at: &str) {
        let body = json!({
            "receiver": "backup-remediator", "status": "resolved", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "externalURL": "http://alertmanager:9093",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "alerts": [{"status": "resolved",
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": "link-services"},
                "annotations": {}, "startsAt": starts_at, "endsAt": chrono::Utc::now().to_rfc3339(),
                "generatorURL": "http://prometheus:9090/graph", "fingerprint": "5c0e2a1b9d8f7e61"}]
        });
        let resp = self
            .client
            .post(format!("{base}/webhook/alertmanager"))
            .bearer_auth(HOOK)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }

    /// Rewrites the service's config file so that binaries started later have no policy file.
    pub fn remove_policy_file(&self) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("policy_file"))
            .collect();
        std::fs::write(&self.config, kept.join("\n")).unwrap();
    }

    pub async fn incident(&self, id: i64) -> Value {
        self.api(&format!("incidents/{id}")).await
    }

    /// The incidents the service serves, newest first (up to 500).
    pub async fn incidents(&self) -> Vec<Value> {
        let page = self.api("incidents?limit=500").await;
        page["incidents"].as_array().cloned().unwrap_or_default()
    }

    /// GET `/api/v1/<path>` with the API token.
    async fn api(&self, path: &str) -> Value {
        self.client
            .get(format!("{}/api/v1/{path}", self.base))
            .bearer_auth(API)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the incident (bounded, 90 s) until `done` holds; panics naming `what` otherwise.
    pub async fn wait_for(&self, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..900 {
            last = self.incident(id).await;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {what} within 90 s: {last:#}");
    }

    /// Starts one more service binary on the same config (PostgreSQL store, a port of its own);
    /// returns its base URL once it answers.
    pub async fn start_process(&mut self) -> String {
        let port = procs::free_port();
        let n = self.processes.len();
        let log = std::fs::File::create(self.dir.path().join(format!("service-{n}.log"))).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_backup-remediator"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the service binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let mut d = procs::Daemon {
            name: "backup-remediator",
            child,
        };
        procs::wait_ready(&mut d, &format!("{base}/healthz"), self.dir.path()).await;
        self.processes.push(d);
        self.bases.push(base.clone());
        base
    }

    /// Waits (bounded) until the service has created `n` backup Jobs; their names.
    pub async fn wait_for_jobs(&self, n: usize) -> Vec<String> {
        for _ in 0..600 {
            let created: Vec<String> = self
                .kube
                .created_jobs()
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if created.len() >= n {
                return created;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the service created no backup Job within 60 s");
    }

    /// What the backup Job would do: `pg_dump -Fc` of each database as `role`, encrypted with
    /// the real `openssl enc` and uploaded under the prefix.
    pub async fn run_backup_as(&self, role: &str, key: &str) {
        for db in &self.pg.dbs[..2] {
            let bytes = dump_as(self.dir.path(), role, db, key);
            self.moto
                .put(
                    BUCKET,
                    &format!(
                        "postgres-backups/verify-{}-{db}.sql.enc",
                        uuid::Uuid::new_v4().simple()
                    ),
                    bytes,
                )
                .await;
        }
    }

    /// Posts the connection alert and waits until the plan holds the primary's restart for a
    /// person: (incident id, step id).
    pub async fn restart_waiting_for_approval(&self) -> (i64, i64) {
        let id = self.alert(&self.base, "2026-11-24T02:30:00Z").await;
        let waiting = self
            .wait_for(id, "an approval request", |i| {
                i["actions"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|s| s["name"] == "restart_primary" && s["state"] == "waiting_approval")
                })
            })
            .await;
        (
            id,
            step(&waiting, "restart_primary")["id"].as_i64().unwrap(),
        )
    }

    pub async fn approve(
        &self,
        incident: i64,
        step: i64,
        verb: &str,
        token: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/api/v1/incidents/{incident}/actions/{step}/{verb}",
                self.base
            ))
            .bearer_auth(token)
            .header("X-Actor", "dba@example.com")
            .json(&json!({"comment": "checked the primary"}))
            .send()
            .await
            .unwrap()
    }
}

/// `pg_dump -Fc` of `db` as `role` (it must exist and read everything), encrypted as the
/// runbook does.
pub fn dump_as(dir: &std::path::Path, role: &str, db: &str, key: &str) -> Vec<u8> {
    use std::process::Command;
    let dump = dir.join(format!("{db}.dump"));
    let out = Command::new("pg_dump")
        .args(["-Fc", "-h", "127.0.0.1", "-U", role, "-f"])
        .arg(&dump)
        .arg(db)
        .env_remove("PGPASSWORD")
        .output()
        .expect("pg_dump is installed");
    assert!(
        out.status.success(),
        "pg_dump of {db} as {role} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg::openssl_encrypt(&dump, key)
}
