//! Load on the running service, side by side with the ceilings of the same work.
//!
//! (a) Distinct alerts: every POST carries a new fingerprint, so every one is a durable insert of
//!     an incident and its `opened` event. Next to it, pgbench runs the same transaction at the
//!     same concurrency against the same PostgreSQL: the database's own ceiling.
//! (b) A re-send storm: the same alert over and over at 200 connections (Alertmanager repeating
//!     a group). Next to it, a bare axum handler in this process that only decodes the same body
//!     and answers 202: the HTTP ceiling of this machine.
//! (c) Distinct alerts again, with the engine and the DEFAULT probe set on (every system the
//!     probes ask pointed at a closed loopback port, so each probe fails fast): intake competes
//!     with diagnosis, planning and escalation for the store and the CPU.
//!
//! The ceilings are those of one transaction per alert; the service writes concurrent first
//! deliveries in one transaction per batch (group commit, `store::GroupCommit`; each request is
//! answered after its batch commits), so its ratio to pgbench can exceed 1. pgbench still runs
//! the per-alert statement, unchanged: the yardstick stays what the database does for one
//! alert at a time.
//! (a) and (c) also run on the embedded SQLite store (shown against the same pgbench ceiling, for
//! scale). Each service's peak resident memory (VmHWM) is read at the end of its phases, after
//! its engine has worked the backlog a few seconds more.
//!
//! The service is the real binary, started as a child process on a fresh database. Every phase
//! is bounded by time and by request count; traffic stays on 127.0.0.1.
//! Run: `cargo bench --bench load` (BENCH_SECONDS=5, BENCH_CONCURRENCY_DISTINCT=16,
//! BENCH_CONCURRENCY_STORM=200, BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres).

// The integration tests' support module; this benchmark uses part of it.
#[allow(dead_code)]
#[path = "../tests/it/support/service.rs"]
mod service;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

const TOKEN: &str = service::WEBHOOK_TOKEN;
const MAX_REQUESTS_PER_TASK: usize = 200_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body(fingerprint: &str) -> String {
    format!(
        r#"{{"receiver":"backup-remediator","status":"firing","alerts":[{{"status":"firing","labels":{{"alertname":"PostgreSQLBackupFailed","severity":"critical","namespace":"link-services"}},"annotations":{{"summary":"PostgreSQL backup failed"}},"startsAt":"2026-11-25T01:02:03.456Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph","fingerprint":"{fingerprint}"}}],"groupLabels":{{"alertname":"PostgreSQLBackupFailed"}},"commonLabels":{{"alertname":"PostgreSQLBackupFailed"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{{}}:{{}}","truncatedAlerts":0}}"#
    )
}

struct Run {
    ok: u64,
    errors: u64,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// `concurrency` tasks, each on its own keep-alive connection, post `make_body(task, n)` to `url`
/// until `duration` passes (or the per-task cap).
async fn load(url: &str, concurrency: u64, duration: Duration, distinct: bool) -> Run {
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let run_id = uuid::Uuid::new_v4().as_u128() as u32;
    for task in 0..concurrency {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        let url = url.to_owned();
        let errors = errors.clone();
        let same = body("6f3d1f1b2c0a9e77");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(16_384);
            for n in 0..MAX_REQUESTS_PER_TASK {
                if Instant::now() >= deadline {
                    break;
                }
                let b = if distinct {
                    body(&format!("{run_id:08x}{task:03x}{n:05x}"))
                } else {
                    same.clone()
                };
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                        let _ = resp.bytes().await;
                        lat.push(t.elapsed());
                    }
                    Ok(resp) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!(
                                "unexpected answer {}: {}",
                                resp.status(),
                                resp.text().await.unwrap_or_default()
                            );
                        }
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("request failed: {e}");
                        }
                    }
                }
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("load task"));
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort();
    Run {
        ok: latencies.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        secs,
        latencies,
    }
}

/// Load from `wrk` (a C load generator: far lighter than this process's own client, which matters
/// on two cores). `distinct`: every request a new fingerprint, `tag` keeping passes apart.
fn wrk(
    url: &str,
    concurrency: u64,
    duration: Duration,
    distinct: Option<&str>,
    dir: &std::path::Path,
) -> Option<Summary> {
    Command::new("wrk").arg("--version").output().ok()?;
    let template = body("FINGERPRINT");
    let (before, after) = template.split_once("FINGERPRINT")?;
    let request = match distinct {
        Some(tag) => format!(
            r#"local counter = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function request()
  counter = counter + 1
  local fp = string.format("%s%02x%08x", "{tag}", tid, counter)
  return wrk.format(nil, nil, nil, [==[{before}]==] .. fp .. [==[{after}]==])
end
"#
        ),
        None => format!(
            "wrk.body = [==[{}]==]
",
            body("6f3d1f1b2c0a9e77")
        ),
    };
    let script = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {TOKEN}"
{request}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %f %f %f\n", summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"#
    );
    let path = dir.join("load.lua");
    std::fs::write(&path, script).ok()?;
    let out = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &concurrency.to_string(),
            "-d",
            &format!("{}s", duration.as_secs().max(1)),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(&path)
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("RESULT "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() != 5 {
        return None;
    }
    Some(Summary {
        ok: (v[0] - v[1]).max(0.0) as u64,
        errors: v[1] as u64,
        secs: v[2],
        p50_ms: v[3],
        p99_ms: v[4],
    })
}

/// Throughput and latency of one measured pass, whichever generator ran it.
struct Summary {
    ok: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Summary {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

impl From<Run> for Summary {
    fn from(r: Run) -> Self {
        Summary {
            ok: r.ok,
            errors: r.errors,
            secs: r.secs,
            p50_ms: ms(r.pct(0.50)),
            p99_ms: ms(r.pct(0.99)),
        }
    }
}

/// A measured pass with wrk when it is installed, else with the in-process client.
async fn measure(
    url: &str,
    concurrency: u64,
    duration: Duration,
    distinct: Option<&str>,
    dir: &std::path::Path,
) -> (Summary, &'static str) {
    if let Some(s) = wrk(url, concurrency, duration, distinct, dir) {
        return (s, "wrk");
    }
    (
        load(url, concurrency, duration, distinct.is_some())
            .await
            .into(),
        "in-process client",
    )
}

/// The HTTP ceiling: decode the body, answer 202, nothing else.
async fn bare_server() -> String {
    let app = axum::Router::new().route(
        "/webhook/alertmanager",
        axum::routing::post(|b: axum::body::Bytes| async move {
            match backup_remediator::domain::alert::decode(&b) {
                Ok(n) => (
                    StatusCode::ACCEPTED,
                    format!("{{\"alerts\":{}}}", n.alerts.len()),
                ),
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}/webhook/alertmanager")
}

/// pgbench running the service's insert statement (`store::postgres::OPEN_INCIDENT`, the same
/// SQL with literal values); returns (tps, average latency ms).
fn pgbench(db_url: &str, concurrency: u64, seconds: u64, dir: &std::path::Path) -> (f64, f64) {
    let script = dir.join("open_incident.sql");
    std::fs::write(
        &script,
        r#"\set fp random(1, 9223372036854775806)
WITH i AS (INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, annotations, generator_url, opened_at, updated_at, last_seen_at, target) VALUES ('pgb' || :fp || '-' || :client_id, 'PostgreSQLBackupFailed', '2026-11-25T01:02:03.456Z', 'open', 'critical', '{"alertname":"PostgreSQLBackupFailed","severity":"critical","namespace":"link-services"}', '{"summary":"PostgreSQL backup failed"}', 'http://prometheus:9090/graph', now(), now(), now(), 'link-services') ON CONFLICT ON CONSTRAINT incidents_alert_key DO NOTHING RETURNING id) INSERT INTO incident_events (incident_id, at, kind, detail) SELECT id, now(), 'opened', '{"receiver":"backup-remediator"}' FROM i RETURNING incident_id;
"#,
    )
    .expect("pgbench script");
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &concurrency.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(db_url)
        .output()
        .expect("pgbench runs (apt-get install postgresql-contrib)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pgbench failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let grab = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (grab("tps"), grab("latency average"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One service's figures.
struct Pass {
    label: String,
    distinct: Summary,
    rss_mib: f64,
    worked: i64,
}

/// Starts the service on `backend` with `config`, measures distinct alerts, lets the engine work
/// `settle` longer, and reads the peak memory.
async fn distinct_pass(
    label: &str,
    backend: service::Backend,
    config: &str,
    concurrency: u64,
    secs: Duration,
    settle: Duration,
    dir: &std::path::Path,
) -> (service::Service, Pass) {
    let svc =
        service::Service::start(env!("CARGO_BIN_EXE_backup-remediator"), backend, config).await;
    let hook = svc.webhook_url();
    let tag = format!("{:02x}", rand_tag());
    measure(
        &hook,
        concurrency,
        Duration::from_secs(1),
        Some(&format!("w{tag}")),
        dir,
    )
    .await;
    let (distinct, _) = measure(&hook, concurrency, secs, Some(&format!("m{tag}")), dir).await;
    tokio::time::sleep(settle).await;
    let worked = svc
        .count("SELECT COUNT(*) FROM incidents WHERE status <> 'open'")
        .await;
    let rss_mib = svc.peak_rss_kib() as f64 / 1024.0;
    let pass = Pass {
        label: label.to_owned(),
        distinct,
        rss_mib,
        worked,
    };
    (svc, pass)
}

fn rand_tag() -> u8 {
    (uuid::Uuid::new_v4().as_u128() & 0xff) as u8
}

fn main() {
    let seconds = env_u64("BENCH_SECONDS", 5).clamp(1, 60);
    let c_distinct = env_u64("BENCH_CONCURRENCY_DISTINCT", 16).clamp(1, 256);
    let c_storm = env_u64("BENCH_CONCURRENCY_STORM", 200).clamp(1, 1000);
    assert!(
        Command::new("pgbench").arg("--version").output().is_ok(),
        "pgbench is missing: apt-get install postgresql-contrib"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        use service::Backend;
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let secs = Duration::from_secs(seconds);
        let settle = Duration::from_secs(5);
        let pool = "[database]\nmax_connections = 16\n";
        let off = format!("{pool}{}", service::PROBES_OFF);
        let on = format!("{pool}{}", service::probes_at_closed_ports());

        // (a) distinct alerts, probes off, PostgreSQL; then the database's ceiling.
        let (svc, a) = distinct_pass("PostgreSQL, probes off", Backend::Postgres, &off, c_distinct, secs, Duration::ZERO, d).await;
        let (tps, pg_lat) = pgbench(&svc.db_url, c_distinct, seconds, d);

        // (b) the storm on the same service: open the alert once, warm up, measure; then the
        // bare handler.
        let hook = svc.webhook_url();
        load(&hook, 1, Duration::from_millis(200), false).await;
        measure(&hook, c_storm, Duration::from_secs(1), None, d).await;
        let (b, generator) = measure(&hook, c_storm, secs, None, d).await;
        let bare = bare_server().await;
        measure(&bare, c_storm, Duration::from_secs(1), None, d).await;
        let (ceiling, _) = measure(&bare, c_storm, secs, None, d).await;
        let rss_a = svc.peak_rss_kib() as f64 / 1024.0;
        let stored = svc
            .count("SELECT renotified_count FROM incidents WHERE fingerprint = '6f3d1f1b2c0a9e77'")
            .await;
        drop(svc);

        // (c) distinct alerts with the engine and the default probes on; and both on SQLite.
        let mut passes = vec![Pass { rss_mib: rss_a, ..a }];
        for (label, backend, config) in [
            ("PostgreSQL, probes ON", Backend::Postgres, &on),
            ("SQLite, probes off", Backend::Sqlite, &off),
            ("SQLite, probes ON", Backend::Sqlite, &on),
        ] {
            let (svc, pass) = distinct_pass(label, backend, config, c_distinct, secs, settle, d).await;
            drop(svc);
            passes.push(pass);
        }

        let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
        println!();
        println!("load generator: {generator}");
        println!("distinct alerts, {c_distinct} connections, {seconds} s each; pgbench ceiling {tps:.0} tx/s (avg {pg_lat:.2} ms, same insert transaction, same concurrency, PostgreSQL)");
        for p in &passes {
            let ratio = p.distinct.rps() / tps;
            let probes_on = p.label.contains("ON");
            let target = if probes_on { 0.50 } else { 0.70 };
            println!(
                "  {:<24} {:>7.0} alerts/s  p50 {:>6.2} ms  p99 {:>7.2} ms  ({} ok, {} errors)  ratio {:.2} (target >= {target:.2}) {}  peak RSS {:.1} MiB (target < 64) {}{}",
                p.label,
                p.distinct.rps(),
                p.distinct.p50_ms,
                p.distinct.p99_ms,
                p.distinct.ok,
                p.distinct.errors,
                ratio,
                verdict(ratio >= target),
                p.rss_mib,
                verdict(p.rss_mib < 64.0),
                if probes_on { format!("  ({} incidents worked to the end meanwhile)", p.worked) } else { String::new() },
            );
        }
        let ratio_b = b.rps() / ceiling.rps();
        println!("identical re-sends, {c_storm} connections, {seconds} s (PostgreSQL, probes off)");
        println!(
            "    service : {:>8.0} req/s     p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ok, {} errors)",
            b.rps(), b.p50_ms, b.p99_ms, b.ok, b.errors
        );
        println!(
            "    bare    : {:>8.0} req/s     p50 {:>6.2} ms  p99 {:>6.2} ms  (decode + 202 only)",
            ceiling.rps(), ceiling.p50_ms, ceiling.p99_ms
        );
        println!(
            "    ratio   : {:.2} of the HTTP ceiling (target >= 0.80) {}; p99 {:.2} ms (target < 10 ms) {}",
            ratio_b,
            verdict(ratio_b >= 0.80),
            b.p99_ms,
            verdict(b.p99_ms < 10.0)
        );
        println!("(re-sends written durably so far by the batched counter: {stored})");
    });
}
