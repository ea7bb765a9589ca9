//! The world of the end-to-end tests (shared by `scenarios` and `gate`): the real PostgreSQL,
//! Prometheus and moto, a namespace of the test cluster (the real Kubernetes API), each in the
//! state a test breaks it into, and the service itself (in this process, or binaries on one
//! PostgreSQL store).

use std::time::Duration;

use backup_remediator::config::Settings;
use serde_json::{json, Value};

use crate::support::{backup, moto, pg, procs};

mod build;
mod checks;
pub mod kube;
pub use build::WorldBuilder;
pub use checks::*;

pub const BUCKET: &str = "link-backups";
pub const KEY: &str = "current-encryption-key-0123456789abcdef";
pub const HOOK: &str = "scenario-hook-token";
pub const API: &str = "scenario-api-token";
pub const PVC: &str = "postgres-data-postgres-primary-0";
pub const ADMIN: &str = "scenario-admin-token";

/// Everything the service looks at, in the state the test broke it into, and the service itself.
pub struct World {
    pub base: String,
    pub client: reqwest::Client,
    pub kube: kube::WorldKube,
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
    pub watchdog: Option<std::sync::Arc<backup_remediator::workflow::watchdog::Watchdog>>,
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

impl World {
    /// A world to build: see [`WorldBuilder`].
    pub fn builder<'a>() -> WorldBuilder<'a> {
        WorldBuilder::default()
    }

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
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": self.kube.namespace()},
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
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": self.kube.namespace()},
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

    /// Rewrites the policy file (binaries started later read it; the world was built with one).
    pub fn rewrite_policy(&self, text: &str) {
        let path = self.dir.path().join("policy.toml");
        assert!(path.exists(), "the world was built with a policy file");
        std::fs::write(path, text).unwrap();
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
        self.upload_new_backups(|db| backup::dump_as(self.dir.path(), role, db, key))
            .await;
    }

    /// Uploads `make(database)` as a new backup of each database, as a verification Job would.
    pub async fn upload_new_backups(&self, make: impl Fn(&str) -> Vec<u8>) {
        for db in &self.pg.dbs[..2] {
            let bytes = make(db);
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
