//! Diagnosis costs the slowest probe, not the sum. Every probe is given the same artificial
//! latency L (they sleep, as a probe waits on its system); one diagnosis of a stored incident —
//! timeline event, all probes, diagnosis, findings and events written in one transaction — is
//! timed and printed as total / L. Target: ≤ 1.15 (the sum would be 9.0 with nine probes).
//!
//! Run: `cargo bench --bench diagnosis` (BENCH_LATENCY_MS, default 200; BENCH_ROUNDS, default 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_remediator::config::Settings;
use backup_remediator::domain::finding::{ProbeOutput, NAMES};
use backup_remediator::domain::incident::NewIncident;
use backup_remediator::probes::{Probe, ProbeContext};
use backup_remediator::store::{Store, StoreOptions};
use backup_remediator::workflow::engine::{Engine, Examiner};
use futures_util::future::BoxFuture;

/// Stands in for a probe whose system answers after `latency`.
struct Waits {
    name: &'static str,
    latency: Duration,
}

impl Probe for Waits {
    fn name(&self) -> &'static str {
        self.name
    }
    fn run(&self, _ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        let latency = self.latency;
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            ProbeOutput::ok("answered")
        })
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let latency = Duration::from_millis(env("BENCH_LATENCY_MS", 200));
    let rounds = env("BENCH_ROUNDS", 10).clamp(1, 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = StoreOptions { max_connections: 4, acquire_timeout: Duration::from_secs(5) };
        let store = Store::connect("", &dir.path().join("bench.sqlite"), &opts).await.expect("store");
        store.migrate().await.expect("migrate");
        let settings = Arc::new(Settings::from_toml("[probes]\ndeadline_ms = 10000").expect("settings"));
        let probes: Vec<Arc<dyn Probe>> =
            NAMES.iter().map(|&name| Arc::new(Waits { name, latency }) as Arc<dyn Probe>).collect();
        let engine = Engine::new(store.clone(), Examiner::new(settings, None).with_probes(probes));

        let mut ratios = Vec::new();
        for round in 0..rounds {
            let new = NewIncident {
                fingerprint: format!("{round:016x}"),
                alertname: "PostgreSQLBackupFailed".into(),
                starts_at: chrono::Utc::now(),
                severity: "critical".into(),
                labels: serde_json::json!({}),
                annotations: serde_json::json!({}),
                generator_url: String::new(),
                opened_at: chrono::Utc::now(),
                detail: serde_json::json!({}),
                target: Some("link-services".into()),
            };
            let id = store.open_incident(&new).await.expect("incident").id();
            let start = Instant::now();
            let report = engine.diagnose(id).await.expect("diagnose").expect("stored");
            let total = start.elapsed();
            assert_eq!(report.findings.len(), NAMES.len());
            ratios.push(total.as_secs_f64() / latency.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        let worst = ratios[ratios.len() - 1];
        println!(
            "diagnosis with {} probes of L = {} ms each, {rounds} rounds: total/L median {median:.3}, worst {worst:.3} \
             (sum would be {:.1}; target <= 1.15) {}",
            NAMES.len(),
            latency.as_millis(),
            NAMES.len() as f64,
            if median <= 1.15 { "MET" } else { "MISSED" }
        );
    });
}
