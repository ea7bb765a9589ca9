//! The real service binary as a child process, for load tests and benchmarks: its own config
//! file and store (a fresh PostgreSQL database, or a SQLite file in a temp dir), its log in a file
//! (counted for errors), its peak resident memory read from /proc. Killed, and its database
//! dropped, when dropped — also on a panic.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::{Connection, Executor};

pub const WEBHOOK_TOKEN: &str = "load-webhook-token-7c21";
pub const API_TOKEN: &str = "load-api-token-3b90";

/// Which store the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A loopback port nobody listens on (bound a moment ago, then released): connections to it are
/// refused at once, so probes pointed at it fail fast.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Configuration that keeps the DEFAULT probe set enabled but points every system it asks
/// (Prometheus, the Kubernetes API, the primary, S3, IAM) at a closed loopback port.
pub fn probes_at_closed_ports() -> String {
    let p = closed_port();
    format!(
        r#"
[probes]
deadline_ms = 2000
[prometheus]
url = "http://127.0.0.1:{p}"
[kubernetes]
api_url = "http://127.0.0.1:{p}"
[target]
host = "127.0.0.1"
port = {p}
connect_timeout_ms = 1000
[s3]
bucket = "load-test-backups"
endpoint = "http://127.0.0.1:{p}"
force_path_style = true
[iam]
endpoint = "http://127.0.0.1:{p}"
access_key_id = "AKIDLOADTEST"
secret_access_key = "load-test-not-a-secret"
"#
    )
}

/// Configuration with no probes: incidents are stored, not worked.
pub const PROBES_OFF: &str = "[probes]\nenabled = []\n";

/// The admin PostgreSQL URL (`TEST_DATABASE_URL`, else the local trust-auth server).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("BENCH_DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The running service.
pub struct Service {
    child: Child,
    pub base: String,
    pub backend: Backend,
    /// The store's URL as the service has it.
    pub db_url: String,
    pg_db: Option<String>,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Service {
    /// Starts `binary` on a fresh store of `backend` with `config` (TOML) over the built-in
    /// defaults, and waits (bounded) until it is ready.
    pub async fn start(binary: &str, backend: Backend, config: &str) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db_url, pg_db) = match backend {
            Backend::Postgres => {
                let admin = admin_url();
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is not reachable: {e}"));
                let name = format!("br_load_{}", uuid::Uuid::new_v4().simple());
                c.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("CREATE DATABASE");
                let base = admin.rsplit_once('/').expect("URL ends in /DB").0;
                (format!("{base}/{name}"), Some(name))
            }
            Backend::Sqlite => (
                format!("sqlite:{}", dir.path().join("incidents.sqlite").display()),
                None,
            ),
        };
        let port = closed_port();
        let file = format!(
            "[auth]\nwebhook_token = \"{WEBHOOK_TOKEN}\"\napi_token = \"{API_TOKEN}\"\n{config}"
        );
        std::fs::write(dir.path().join("service.toml"), file).expect("config");
        let log = dir.path().join("service.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary)
            .current_dir(dir.path())
            .args(["--config", "service.toml", "--log-format", "json"])
            .args(["--database-url", &db_url, "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start the service");
        let service = Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            backend,
            db_url,
            pg_db,
            _dir: dir,
            log,
        };
        let client = reqwest::Client::new();
        for _ in 0..150 {
            let ready = client
                .get(format!("{}/readyz", service.base))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return service;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the service did not become ready:\n{}", service.log_text());
    }

    /// The service's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (not restarted, not crashed).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/webhook/alertmanager", self.base)
    }

    /// Everything the service logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }

    /// Samples the anonymous resident memory (heap and stacks: what a backlog can grow, unlike
    /// the binary's own pages) every 100 ms until the returned guard is dropped; the guard keeps
    /// the peak, in KiB.
    pub fn sample_anonymous_memory(&self) -> AnonSampler {
        let pid = self.child.id();
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(
                    status_kib(pid, "RssAnon:"),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        AnonSampler { peak, task }
    }

    /// Runs `sql` (a single-number query) against the service's store, from outside it.
    pub async fn count(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.db_url)
                    .await
                    .expect("connect");
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql);
                c.close().await.ok();
                n
            }
            Backend::Sqlite => {
                let path = self.db_url.trim_start_matches("sqlite:");
                let opts = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .read_only(true)
                    .busy_timeout(Duration::from_secs(5));
                let mut c = sqlx::SqliteConnection::connect_with(&opts)
                    .await
                    .expect("open");
                let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.expect(sql);
                c.close().await.ok();
                n
            }
        }
    }
}

/// A field of /proc/PID/status in KiB (0 when unreadable).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The running sampler of [`Service::sample_anonymous_memory`].
pub struct AnonSampler {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl AnonSampler {
    /// The highest anonymous resident memory seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for AnonSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(db) = self.pg_db.take() {
            let admin = admin_url();
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let drop = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
                            let _ = c.execute(drop.as_str()).await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// A version 4 Alertmanager delivery of firing `PostgreSQLBackupFailed` alerts, one per
/// fingerprint.
pub fn delivery(fingerprints: &[String]) -> String {
    let alerts: Vec<String> = fingerprints
        .iter()
        .map(|fp| {
            format!(
                r#"{{"status":"firing","labels":{{"alertname":"PostgreSQLBackupFailed","severity":"critical","namespace":"link-services"}},"annotations":{{"summary":"PostgreSQL backup failed"}},"startsAt":"2026-11-25T01:02:03.456Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"{fp}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"receiver":"backup-remediator","status":"firing","alerts":[{}],"groupLabels":{{"alertname":"PostgreSQLBackupFailed"}},"commonLabels":{{"alertname":"PostgreSQLBackupFailed"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{{}}:{{}}","truncatedAlerts":0}}"#,
        alerts.join(",")
    )
}

/// Posts `total` distinct alerts (fingerprints `{tag}{n:012x}`), `per_delivery` per request, over
/// `connections` concurrent connections. Returns how many deliveries were not answered 202.
pub async fn post_distinct(
    url: &str,
    tag: &str,
    total: usize,
    per_delivery: usize,
    connections: usize,
) -> usize {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (url, tag, next) = (url.to_owned(), tag.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            let mut failed = 0;
            loop {
                let start = next.fetch_add(per_delivery, std::sync::atomic::Ordering::Relaxed);
                if start >= total {
                    return failed;
                }
                let fps: Vec<String> = (start..(start + per_delivery).min(total))
                    .map(|n| format!("{tag}{n:012x}"))
                    .collect();
                let ok = client
                    .post(&url)
                    .bearer_auth(WEBHOOK_TOKEN)
                    .header("content-type", "application/json")
                    .body(delivery(&fps))
                    .send()
                    .await
                    .map(|r| r.status() == 202)
                    .unwrap_or(false);
                if !ok {
                    failed += 1;
                }
            }
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await.expect("poster");
    }
    failed
}
