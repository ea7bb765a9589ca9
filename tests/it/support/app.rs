//! The test harness: every test gets the real application on a random loopback port, over its
//! own fresh store (a new PostgreSQL database, dropped afterwards, or a SQLite file in a temp dir).

use std::sync::OnceLock;
use std::time::Duration;

use backup_remediator::app::startup::Application;
use backup_remediator::app::telemetry;
use backup_remediator::config::{Settings, DEFAULT_CONFIG};
use backup_remediator::store::{Store, StoreOptions};
use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::pg::admin_url;

pub const WEBHOOK_TOKEN: &str = "test-webhook-token-5d1e";
pub const API_TOKEN: &str = "test-api-token-88a0";

fn with_database(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("TEST_DATABASE_URL must end in /DATABASE"),
    }
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            telemetry::init_tracing(backup_remediator::config::LogFormat::Pretty, "debug");
        }
    });
}

/// Which store a test runs against (the one enum the service binary's tests use as well).
pub use super::service::Backend;

/// A fresh store for one test, removed when dropped.
pub enum TestDb {
    Postgres { name: String, url: String },
    Sqlite { dir: tempfile::TempDir },
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let admin = admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "cannot reach the test PostgreSQL at {admin}: {e}\n\
                         Start it (scripts/test.sh does): pg_ctlcluster --skip-systemctl-redirect 15 main start"
                    )
                });
                let name = format!("br_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("CREATE DATABASE");
                conn.close().await.ok();
                let url = with_database(&admin, &name);
                TestDb::Postgres { name, url }
            }
            Backend::Sqlite => TestDb::Sqlite {
                dir: tempfile::tempdir().expect("temp dir"),
            },
        }
    }

    /// The `database.url` the app is given.
    pub fn url(&self) -> String {
        match self {
            TestDb::Postgres { url, .. } => url.clone(),
            TestDb::Sqlite { dir } => {
                format!("sqlite:{}", dir.path().join("incidents.sqlite").display())
            }
        }
    }

    /// Drops the PostgreSQL database now, with the app's connections in it (an outage).
    pub async fn drop_now(&self) {
        if let TestDb::Postgres { name, .. } = self {
            drop_database(name).await;
        }
    }
}

async fn drop_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        conn.close().await.ok();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres { name, .. } = self {
            let name = name.clone();
            // Drop runs inside the test's runtime; do the async clean-up on a runtime of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_database(&name));
                }
            })
            .join();
        }
    }
}

/// A fresh, migrated store of `backend`; it lives as long as the returned guard.
pub async fn fresh_store(backend: Backend) -> (TestDb, Store) {
    let db = TestDb::new(backend).await;
    let store = connect(&db).await;
    store.migrate().await.unwrap();
    (db, store)
}

/// The store of a test database (four connections, as a small service has).
pub async fn connect(db: &TestDb) -> Store {
    let opts = StoreOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(3),
    };
    Store::connect(&db.url(), std::path::Path::new(""), &opts)
        .await
        .unwrap()
}

/// The settings a test app gets: defaults, then the test's store and tokens, then `extra` TOML.
pub fn test_settings(db_url: &str, extra: &str) -> Settings {
    let base = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        shutdown_grace_seconds = 5
        [database]
        url = "{db_url}"
        max_connections = 5
        acquire_timeout_ms = 1500
        [auth]
        webhook_token = "{WEBHOOK_TOKEN}"
        api_token = "{API_TOKEN}"
        [dedupe]
        flush_interval_ms = 50
        [probes]
        enabled = []
        [watchdog]
        enabled = false
        "#
    );
    let fig = Figment::from(Toml::string(DEFAULT_CONFIG))
        .merge(Toml::string(&base))
        .merge(Toml::string(extra));
    let settings = Settings::from_figment(fig).expect("test settings");
    settings.check_serving().expect("test settings can serve");
    settings
}

/// A running application.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub db: TestDb,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Starts the app over a fresh store of `backend`.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, "").await
}

/// Starts the app over a fresh store, with extra TOML configuration.
pub async fn spawn_app_with(backend: Backend, extra: &str) -> TestApp {
    let db = TestDb::new(backend).await;
    spawn_on(db, extra).await
}

/// Starts the app over an existing test store.
pub async fn spawn_on(db: TestDb, extra: &str) -> TestApp {
    init_logs();
    let settings = test_settings(&db.url(), extra);
    let app = Application::build(settings)
        .await
        .expect("application starts");
    let address = format!("http://{}", app.local_addr());
    let store = app.store().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async {
            let _ = stopped.await;
        })
        .await
        .expect("application runs");
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        store,
        db,
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub async fn post_webhook(&self, body: &Value) -> reqwest::Response {
        self.post_webhook_raw(body.to_string(), Some(&format!("Bearer {WEBHOOK_TOKEN}")))
            .await
    }

    pub async fn post_webhook_raw(
        &self,
        body: impl Into<reqwest::Body>,
        authorization: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/webhook/alertmanager", self.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        req.send().await.expect("POST /webhook/alertmanager")
    }

    /// A webhook post that owns what it needs, to run many at once.
    pub fn webhook_request(
        &self,
        body: String,
    ) -> impl std::future::Future<Output = reqwest::Response> + Send + 'static {
        let req = self
            .client
            .post(format!("{}/webhook/alertmanager", self.address))
            .header("content-type", "application/json")
            .bearer_auth(WEBHOOK_TOKEN)
            .body(body);
        async move { req.send().await.expect("POST /webhook/alertmanager") }
    }

    /// `GET path` with the API token.
    pub async fn api_get(&self, path_and_query: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path_and_query}", self.address))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("GET")
    }

    /// The incident as the API shows it; panics unless 200.
    pub async fn incident(&self, id: i64) -> Value {
        let resp = self.api_get(&format!("/api/v1/incidents/{id}")).await;
        assert_eq!(resp.status(), 200, "GET incident {id}");
        resp.json().await.expect("incident JSON")
    }

    /// All incidents as the API lists them (one page of up to 500).
    pub async fn incidents(&self) -> Vec<Value> {
        let resp = self.api_get("/api/v1/incidents?limit=500").await;
        assert_eq!(resp.status(), 200);
        let page: Value = resp.json().await.expect("page JSON");
        page["incidents"]
            .as_array()
            .expect("incidents array")
            .clone()
    }

    /// Stops the app gracefully (as on SIGTERM) and waits for it; the store stays.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("app stops within 10 s")
                .expect("app task ends cleanly");
        }
    }

    /// Stops the app and hands back its store, for a restart on the same data.
    pub async fn stop_keep_db(mut self) -> TestDb {
        self.stop().await;
        std::mem::replace(
            &mut self.db,
            TestDb::Sqlite {
                dir: tempfile::tempdir().expect("tmp"),
            },
        )
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One alert as Alertmanager sends it.
pub fn alert(name: &str, fingerprint: &str, status: &str, starts_at: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": name, "severity": "critical", "namespace": "link-services", "job": "postgres-backup"},
        "annotations": {"summary": "PostgreSQL backup failed", "runbook_url": "https://example.invalid/runbook"},
        "startsAt": starts_at,
        "endsAt": if status == "resolved" { "2026-11-25T03:00:00.5Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=postgres_backup_errors_total",
        "fingerprint": fingerprint,
    })
}

/// A firing `PostgreSQLBackupFailed` alert.
pub fn backup_failed(fingerprint: &str) -> Value {
    alert(
        "PostgreSQLBackupFailed",
        fingerprint,
        "firing",
        "2026-11-25T01:02:03.456Z",
    )
}

/// A version 4 delivery of `alerts`, shaped like Alertmanager 0.25's.
pub fn payload(alerts: Vec<Value>) -> Value {
    let status = if alerts.iter().any(|a| a["status"] == "firing") {
        "firing"
    } else {
        "resolved"
    };
    json!({
        "receiver": "backup-remediator",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": "PostgreSQLBackupFailed"},
        "commonLabels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical"},
        "commonAnnotations": {"summary": "PostgreSQL backup failed"},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"PostgreSQLBackupFailed\"}",
        "truncatedAlerts": 0
    })
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The kinds of an incident's timeline events, as `GET /api/v1/incidents/{id}` serves them.
pub fn timeline_kinds(incident: &Value) -> Vec<&str> {
    incident["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect()
}
