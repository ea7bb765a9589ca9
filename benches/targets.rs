//! Targets at scale (issue 21): what 200 backup streams behind one service cost.
//!
//! (a) Start-up with 200 `[[targets]]` (each its own namespace, Secret, two databases and prefix;
//!     the 200 share 10 bucket+prefix places, 20 targets each): `Application::build` in this
//!     process, and the real binary's `serve` until `/readyz` answers (polled every 100 ms), then
//!     its resident memory (VmRSS) once its first watchdog period is done. Next to each, the same
//!     with one target.
//! (b) One watchdog period (`Watchdog::check_period`) over the 200 targets, against moto's S3
//!     (ListObjectsV2 counted by moto's recorder), a stand-in Prometheus in this process (it
//!     counts `/api/v1/query` calls and answers one fresh job-level series, so no database is
//!     stale and the period opens nothing) and the stand-in Kubernetes API (Secret reads counted).
//!     Twice: the 200 targets sharing 10 places, then 200 distinct places. Every database of
//!     every target has one fresh backup object.
//! (c) An alert storm: distinct alerts spread over 50 targets against the real binary (probes off:
//!     intake and routing only), next to the same storm to one target. Then the fleet cap: 50
//!     targets, a live policy, every target's backup failed for no visible reason (the transient
//!     playbook: rerun the backup Job), and a Kubernetes API that never finishes a Job; while the
//!     storm is worked the store is sampled for steps in `running`, and the Jobs created are
//!     counted at the Kubernetes API.
//!
//! Everything listens on 127.0.0.1 and is stopped at the end (moto killed, the binaries killed,
//! their databases dropped, the in-process servers aborted).
//! Run: `cargo bench --bench targets` (BENCH_SECONDS=8: how long the cap is sampled;
//! BENCH_ALERTS=3000: the storm's size; needs PostgreSQL at TEST_DATABASE_URL and moto at
//! MOTO_SERVER, as the integration tests do).

#[allow(dead_code)]
#[path = "support/kube_stand_in/mod.rs"]
mod kube_server;
#[allow(dead_code)]
#[path = "../tests/it/support/moto.rs"]
mod moto;
#[allow(dead_code)]
#[path = "../tests/it/support/service.rs"]
mod service;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_remediator::app::startup::Application;
use backup_remediator::config::Settings;
use chrono::TimeZone;
use kube_server::{fixtures as fx, KubeServer};
use serde_json::{json, Value};

const BUCKET: &str = "fleet-backups";
const BIN: &str = env!("CARGO_BIN_EXE_backup-remediator");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A stand-in Prometheus: counts the instant queries and answers one job-level series of the
/// backup metric, fresh, so that every database's backups look recent.
struct Prometheus {
    url: String,
    queries: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prometheus {
    async fn start() -> Self {
        let queries = Arc::new(AtomicU64::new(0));
        let counted = queries.clone();
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::any(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async move {
                    let now = chrono::Utc::now().timestamp();
                    axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": [
                        {"metric": {"__name__": "postgres_backup_last_success_timestamp", "job": "postgres-backup"},
                         "value": [now, now.to_string()]}]}}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Prometheus { url, queries, task }
    }

    fn count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// The third parties every target is pointed at.
struct World {
    moto: moto::Moto,
    kube: KubeServer,
    prom: Prometheus,
}

/// How the targets of a generated config place their backups.
#[derive(Clone, Copy)]
enum Places {
    /// `n` places (bucket + prefix + credentials), target i in place i % n.
    Shared(usize),
    /// Every target its own prefix and credentials.
    Own,
}

impl Places {
    fn label(self) -> &'static str {
        match self {
            Places::Shared(_) => "shared",
            Places::Own => "own",
        }
    }
    /// Target `i`'s place number.
    fn of(self, i: usize) -> usize {
        match self {
            Places::Shared(n) => i % n,
            Places::Own => i,
        }
    }
    fn prefix(self, i: usize) -> String {
        format!("{}-{:03}/", self.label(), self.of(i))
    }
    fn secret(self) -> String {
        format!("backup-{}", self.label())
    }
}

fn ns(i: usize) -> String {
    format!("ns-{i:03}")
}

fn databases(i: usize) -> [String; 2] {
    [format!("t{i:03}_a"), format!("t{i:03}_b")]
}

/// `[[targets]]` entries for `n` targets.
fn targets_toml(n: usize, places: Places) -> String {
    let mut out = String::new();
    for i in 0..n {
        let [a, b] = databases(i);
        out.push_str(&format!(
            "\n[[targets]]\nname = \"t{i:03}\"\nmatch = {{ namespace = \"{ns}\" }}\n\
             [targets.kubernetes]\nnamespace = \"{ns}\"\nbackup_cronjob = \"{ns}-backup\"\nbackup_secret = \"{secret}\"\n\
             [targets.target]\ndatabases = [\"{a}\", \"{b}\"]\n[targets.s3]\nprefix = \"{prefix}\"\n",
            ns = ns(i),
            secret = places.secret(),
            prefix = places.prefix(i),
        ));
    }
    out
}

/// The sections every config of this bench shares: the world's addresses, no restore tests.
fn common_toml(w: &World) -> String {
    format!(
        "[probes]\ndeadline_ms = 10000\n[prometheus]\nurl = \"{prom}\"\n[kubernetes]\napi_url = \"{kube}\"\nnamespace = \"ns-000\"\n\
         [s3]\nendpoint = \"{moto}\"\nforce_path_style = true\nbucket = \"{BUCKET}\"\n[iam]\nendpoint = \"{moto}\"\n\
         [restore_test]\nenabled = false\n",
        prom = w.prom.url,
        kube = w.kube.url,
        moto = w.moto.url,
    )
}

/// Settings for `Application::build` in this process, on a SQLite file in `dir`.
fn in_process(w: &World, dir: &std::path::Path, extra: &str) -> Settings {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"sqlite:{}\"\n\
         [auth]\nwebhook_token = \"{}\"\napi_token = \"{}\"\n{}{extra}",
        dir.join(format!("{}.sqlite", uuid::Uuid::new_v4().simple()))
            .display(),
        service::WEBHOOK_TOKEN,
        service::API_TOKEN,
        common_toml(w),
    );
    Settings::from_toml(&toml).expect("the generated config is valid")
}

/// Puts every target's Secret (credentials of its place) and one fresh backup per database.
async fn furnish(w: &World, n: usize, places: Places) {
    for i in 0..n {
        let p = places.of(i);
        let id = format!("AKIA{}{p:012}", places.label().to_uppercase());
        let secret = format!("{}-place-{p}-not-a-secret", places.label());
        let mut s = fx::secret(
            &places.secret(),
            &[
                ("aws-access-key-id", id.as_str()),
                ("aws-secret-access-key", secret.as_str()),
            ],
        );
        s["metadata"]["namespace"] = json!(ns(i));
        w.kube.put(s);
    }
    let puts: Vec<(String, String)> = (0..n)
        .flat_map(|i| databases(i).map(|db| (places.prefix(i), db)))
        .collect();
    use futures_util::StreamExt;
    futures_util::stream::iter(puts)
        .for_each_concurrent(16, |(prefix, db)| async move {
            let key = format!("{prefix}postgres-backup-20261207-{db}.sql.enc");
            w.moto
                .put(BUCKET, &key, b"not a real backup".to_vec())
                .await
        })
        .await;
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The resident memory of process `pid` now (VmRSS), in MiB.
fn vm_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

/// (a) `Application::build` (median of 3) and the real binary: time to ready, VmRSS after its
/// first watchdog period.
async fn startup(w: &World, dir: &std::path::Path, label: &str, targets: &str) -> String {
    let mut builds = Vec::new();
    for _ in 0..3 {
        let settings = in_process(w, dir, targets);
        let t = Instant::now();
        let app = Application::build(settings).await.expect("builds");
        builds.push(t.elapsed());
        drop(app);
    }
    let config = format!("{}{targets}", common_toml(w));
    let t = Instant::now();
    let svc = service::Service::start(BIN, service::Backend::Sqlite, &config).await;
    let ready = t.elapsed();
    // The watchdog checks its first period at start: let it finish before reading memory.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rss = vm_rss_mib(svc.pid());
    let hwm = svc.peak_rss_kib() as f64 / 1024.0;
    let errors = svc.log_lines_with("\"ERROR\"");
    drop(svc);
    format!(
        "  {label:<11} Application::build {:>7.1} ms (median of 3)   binary serve → /readyz {:>7.0} ms   idle VmRSS {rss:>5.1} MiB (peak {hwm:.1}; target < 64) {}{}",
        ms(median(builds)),
        ms(ready),
        if rss < 64.0 { "MET" } else { "MISSED" },
        if errors > 0 { format!("  ({errors} ERROR log lines)") } else { String::new() },
    )
}

/// (a) Reading the config: `Settings::from_toml` (the binary's start-up does the same before it
/// builds anything) with 50, 100 and 200 targets, median of 3.
fn resolution(w: &World, dir: &std::path::Path) -> String {
    let figures: Vec<String> = [1, 50, 100, 200]
        .into_iter()
        .map(|n| {
            let targets = targets_toml(n, Places::Shared(10));
            let times = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    in_process(w, dir, &targets);
                    t.elapsed()
                })
                .collect();
            format!("{n} → {:.0} ms", ms(median(times)))
        })
        .collect();
    format!(
        "  reading the config (Settings::from_toml, median of 3): {}",
        figures.join(", ")
    )
}

/// (b) Two watchdog periods over `n` targets placed as `places`.
async fn watchdog(w: &World, dir: &std::path::Path, n: usize, places: Places) -> String {
    let settings = in_process(w, dir, &targets_toml(n, places));
    let app = Application::build(settings).await.expect("builds");
    let dog = app.watchdog();
    let mut lines = Vec::new();
    for k in 0..2_i64 {
        let period = chrono::Utc
            .timestamp_opt(1_800_000_000 + k * 900, 0)
            .single()
            .expect("a time");
        w.moto.start_recording().await;
        let (prom0, kube0) = (w.prom.count(), w.kube.requests().len());
        let t = Instant::now();
        let report = dog
            .check_period(period)
            .await
            .expect("the store answers")
            .expect("the period is ours");
        let took = t.elapsed();
        let lists = w
            .moto
            .recorded()
            .await
            .into_iter()
            .filter(|(m, u)| m == "GET" && u.contains("list-type=2"))
            .count();
        let secrets = w.kube.requests()[kube0..]
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/secrets/"))
            .count();
        let stale = report
            .verdicts
            .iter()
            .filter(|v| !v.reasons.is_empty())
            .count();
        lines.push(format!(
            "    period {}: {:>4} ListObjectsV2 (service counted {}), {} Prometheus queries, {} Secret reads, {} verdicts ({stale} stale, {} opened), unanswered {:?}, {:.0} ms",
            k + 1,
            lists,
            report.s3_list_requests,
            w.prom.count() - prom0,
            secrets,
            report.verdicts.len(),
            report.opened.len(),
            report.unanswered.keys().collect::<Vec<_>>(),
            ms(took),
        ));
    }
    drop(app);
    let what = match places {
        Places::Shared(p) => format!("{n} targets × 2 databases sharing {p} places"),
        Places::Own => format!("{n} targets × 2 databases in {n} distinct places"),
    };
    format!("  {what}\n{}", lines.join("\n"))
}

/// A delivery of one firing backup alert labelled `namespace`.
fn alert(fingerprint: &str, namespace: &str) -> String {
    json!({"receiver": "backup-remediator", "status": "firing", "version": "4", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "externalURL": "http://alertmanager:9093",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "alerts": [{"status": "firing",
            "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": namespace},
            "annotations": {}, "startsAt": "2026-12-07T02:30:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fingerprint}]})
    .to_string()
}

/// Posts `total` distinct alerts, alert k labelled with namespace `ns(k % spread)`, over 16
/// connections; (accepted, seconds).
async fn storm(url: &str, tag: &str, total: usize, spread: usize) -> (usize, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (url, tag, next) = (url.to_owned(), tag.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ok = 0;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                if k >= total {
                    return ok;
                }
                let sent = client
                    .post(&url)
                    .bearer_auth(service::WEBHOOK_TOKEN)
                    .header("content-type", "application/json")
                    .body(alert(&format!("{tag}{k:012x}"), &ns(k % spread)))
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == 202) {
                    ok += 1;
                }
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("poster");
    }
    (ok, start.elapsed().as_secs_f64())
}

/// (c) The ingest rate of the same storm over 50 targets and over one.
async fn ingest(w: &World, total: usize) -> String {
    let off = format!("{}[probes]\nenabled = []\n", common_toml(w))
        .replace("[probes]\ndeadline_ms = 10000\n", "");
    let mut figures = Vec::new();
    for (label, spread, targets) in [
        ("1 target  ", 1, targets_toml(1, Places::Shared(10))),
        ("50 targets", 50, targets_toml(50, Places::Shared(10))),
        ("1 target  ", 1, targets_toml(1, Places::Shared(10))),
    ] {
        let svc =
            service::Service::start(BIN, service::Backend::Postgres, &format!("{off}{targets}"))
                .await;
        storm(&svc.webhook_url(), "w", 200, spread).await;
        let (ok, secs) = storm(&svc.webhook_url(), "m", total, spread).await;
        let routed = svc
            .count("SELECT COUNT(DISTINCT target) FROM incidents WHERE target IS NOT NULL")
            .await;
        figures.push((label, ok as f64 / secs, ok, routed));
    }
    let one = (figures[0].1 + figures[2].1) / 2.0;
    let mut out: Vec<String> = figures
        .iter()
        .map(|(label, rate, ok, routed)| {
            format!("    {label}: {rate:>6.0} alerts/s ({ok} of {total} accepted, routed to {routed} targets)")
        })
        .collect();
    out.push(format!(
        "    ratio 50 targets / 1 target (mean of the two 1-target runs): {:.2}",
        figures[1].1 / one
    ));
    format!(
        "  storm of {total} distinct alerts, 16 connections, probes off (PostgreSQL store)\n{}",
        out.join("\n")
    )
}

/// (c) The fleet cap under a live policy while Jobs never finish.
async fn cap(w: &World, dir: &std::path::Path, total: usize, seconds: u64) -> String {
    let n = 50;
    for i in 0..n {
        let put = |mut obj: Value| {
            obj["metadata"]["namespace"] = json!(ns(i));
            w.kube.put(obj);
        };
        let failed = format!("{}-backup-29002440", ns(i));
        let pod = format!("{failed}-x7k2p");
        put(fx::cronjob(&format!("{}-backup", ns(i))));
        put(fx::job(&failed, "2026-12-07T02:00:00Z", "failed"));
        put(fx::job_pod(&pod, &failed, "2026-12-07T02:00:01Z", "error"));
        w.kube.set_log(
            &ns(i),
            &pod,
            "Starting backup\npg_dump: error: could not receive data from server: Connection reset by peer\n",
        );
    }
    let policy = dir.join("live-policy.toml");
    std::fs::write(&policy, "dry_run = false\n").expect("policy");
    let jobs0 = w.kube.created_jobs().len();
    let config = format!(
        "{}[remediation]\npolicy_file = \"{}\"\nmax_concurrent_actions = 4\njob_deadline_seconds = 600\n\
         [watchdog]\nenabled = false\n{}",
        common_toml(w).replace(
            "[probes]\ndeadline_ms = 10000\n",
            "[probes]\ndeadline_ms = 10000\nenabled = [\"backup_job\"]\n"
        ),
        policy.display(),
        targets_toml(n, Places::Shared(10)),
    );
    let svc = service::Service::start(BIN, service::Backend::Postgres, &config).await;
    // Sampled from before the storm until `seconds` after it, on one connection of its own.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_running(svc.db_url.clone(), stop.clone()));
    let (ok, _) = storm(&svc.webhook_url(), "c", total, n).await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let (max_running, samples) = sampler.await.expect("sampler");
    let planned = svc
        .count(
            "SELECT COUNT(DISTINCT incident_id) FROM plan_steps WHERE kind IN ('action', 'verify')",
        )
        .await;
    let states = step_states(&svc.db_url).await;
    let jobs = w.kube.created_jobs().len() - jobs0;
    drop(svc);
    format!(
        "  fleet cap: {ok} alerts over {n} targets, live policy, Jobs never finish, max_concurrent_actions = 4\n    \
         at most {max_running} steps running at once over {samples} samples (every 50 ms from before the storm to {seconds} s after it); {jobs} Jobs created at the Kubernetes API; \
         {planned} incidents with an action or rerun planned, their steps by state: {states} — cap {}",
        if max_running <= 4 && jobs <= 4 { "HELD" } else { "BROKEN" }
    )
}

/// Counts the action and rerun steps in `running` every 50 ms until `stop`; (most at once,
/// samples).
async fn sample_running(db_url: String, stop: Arc<std::sync::atomic::AtomicBool>) -> (i64, u64) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db_url)
        .await
        .expect("the store answers");
    let (mut most, mut samples) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        let running: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM plan_steps WHERE state = 'running' AND kind IN ('action', 'verify')",
        )
        .fetch_one(&mut c)
        .await
        .expect("count");
        most = most.max(running);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.close().await.ok();
    (most, samples)
}

/// The action and rerun steps by state, "running 4, pending 20".
async fn step_states(db_url: &str) -> String {
    use sqlx::Connection;
    let Ok(mut c) = sqlx::PgConnection::connect(db_url).await else {
        return "(store unreachable)".to_owned();
    };
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, COUNT(*) FROM plan_steps WHERE kind IN ('action', 'verify') GROUP BY state ORDER BY state",
    )
    .fetch_all(&mut c)
    .await
    .unwrap_or_default();
    c.close().await.ok();
    rows.iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let seconds = env_u64("BENCH_SECONDS", 8).clamp(2, 120);
    let alerts = env_u64("BENCH_ALERTS", 3000).clamp(100, 100_000) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        backup_remediator::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let w = World {
            moto: moto::Moto::start().await,
            kube: KubeServer::start().await,
            prom: Prometheus::start().await,
        };
        w.moto.create_bucket(BUCKET).await;
        let t = Instant::now();
        furnish(&w, 200, Places::Shared(10)).await;
        furnish(&w, 200, Places::Own).await;
        eprintln!("world furnished in {:.1} s", t.elapsed().as_secs_f64());

        println!();
        println!("start-up (SQLite store; the binary's first watchdog period included before the memory reading)");
        println!("{}", resolution(&w, d));
        println!("{}", startup(&w, d, "1 target", &targets_toml(1, Places::Shared(10))).await);
        println!("{}", startup(&w, d, "200 targets", &targets_toml(200, Places::Shared(10))).await);
        println!("one watchdog period (moto S3, stand-in Prometheus and Kubernetes API)");
        println!("{}", watchdog(&w, d, 200, Places::Shared(10)).await);
        println!("{}", watchdog(&w, d, 200, Places::Own).await);
        println!("alert storm");
        println!("{}", ingest(&w, alerts).await);
        println!("{}", cap(&w, d, 500.min(alerts), seconds).await);
        drop(w);
    });
}
