//! Real daemons started by tests (Prometheus, Alertmanager, …) on loopback: started in a temp
//! dir, killed and reaped when dropped, their log shown when they fail to come up.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Daemon {
    pub name: &'static str,
    pub child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails the test with what to install when `binary` is not on PATH.
pub fn require(binary: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{binary} is not installed: run scripts/test.sh, or apt-get install -y --no-install-recommends \
         prometheus prometheus-alertmanager"
    );
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `name args…` in `dir`, output to `dir/NAME.log`.
pub fn start(name: &'static str, args: &[String], dir: &Path) -> Daemon {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(name)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Daemon { name, child }
}

/// Waits (bounded) until `url` answers 2xx; panics with the daemon's log otherwise.
pub async fn wait_ready(d: &mut Daemon, url: &str, dir: &Path) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if d.child.try_wait().ok().flatten().is_some() {
            break;
        }
        if client
            .get(url)
            .send()
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(dir.join(format!("{}.log", d.name))).unwrap_or_default();
    panic!("{} did not become ready at {url}:\n{log}", d.name);
}

/// A real Prometheus scraping `targets` every second, with `rules` (YAML) and an optional
/// Alertmanager. Returns the daemon and its base URL.
pub async fn prometheus(
    dir: &Path,
    targets: &[String],
    rules: Option<&str>,
    alertmanager: Option<u16>,
) -> (Daemon, String) {
    require("prometheus");
    let port = free_port();
    let rule_files = match rules {
        Some(r) => {
            std::fs::write(dir.join("rules.yml"), r).unwrap();
            "rule_files: [rules.yml]\n"
        }
        None => "",
    };
    let alerting = match alertmanager {
        Some(p) => format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{p}\"]\n"),
        None => String::new(),
    };
    let targets = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("prom.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}{alerting}\
             scrape_configs:\n  - job_name: postgres-backup\n    static_configs:\n      - targets: [{targets}]\n"
        ),
    )
    .unwrap();
    let mut d = start(
        "prometheus",
        &[
            "--config.file=prom.yml".into(),
            "--storage.tsdb.path=prom-data".into(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        dir,
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&mut d, &format!("{url}/-/ready"), dir).await;
    (d, url)
}

/// Serves whatever text `body()` returns at /metrics, for Prometheus to scrape.
pub async fn exporter<F>(body: F) -> std::net::SocketAddr
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let b = body.clone();
            async move { b() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

/// Polls Prometheus until `promql` returns a non-empty vector (bounded).
pub async fn wait_for_series(prom_url: &str, promql: &str) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let r = client
            .get(format!("{prom_url}/api/v1/query"))
            .query(&[("query", promql)])
            .send()
            .await;
        if let Ok(r) = r {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["data"]["result"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
                {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("Prometheus never had a result for {promql}");
}
