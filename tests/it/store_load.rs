//! The service under load, as the real binary: the embedded SQLite store never reports
//! `database is locked` while the engine, the notifier and intake write at once; a backlog is
//! worked to the end; and memory stays bounded whatever the backlog, with the default probes on
//! (pointed at closed loopback ports, so each fails fast).

use std::time::{Duration, Instant};

use crate::support::service;
use service::{post_distinct, probes_at_closed_ports, Backend, Service};

const BINARY: &str = env!("CARGO_BIN_EXE_backup-remediator");

/// These tests each load the machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LOCKED: &str = "database is locked";

/// Waits (bounded) until no incident is open; returns how long it took, or `None`.
async fn all_worked(service: &Service, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if service
            .count("SELECT COUNT(*) FROM incidents WHERE status = 'open'")
            .await
            == 0
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

async fn alerts_posted_one_after_another_are_all_worked_without_lock_errors(backend: Backend) {
    let _one = SERIAL.lock().await;
    let service = Service::start(BINARY, backend, &probes_at_closed_ports()).await;

    for n in 0..20 {
        let failed = post_distinct(&service.webhook_url(), &format!("seq{n:02}"), 1, 1, 1).await;
        assert_eq!(failed, 0, "alert {n} was not accepted");
    }
    let worked = all_worked(&service, Duration::from_secs(90)).await;

    let open = service
        .count("SELECT COUNT(*) FROM incidents WHERE status = 'open'")
        .await;
    let escalated = service
        .count("SELECT COUNT(*) FROM incidents WHERE status = 'escalated'")
        .await;
    let diagnosed = service.count("SELECT COUNT(*) FROM diagnoses").await;
    let locked = service.log_lines_with(LOCKED);
    assert_eq!(
        (locked, open, diagnosed, escalated),
        (0, 0, 20, 20),
        "(`{LOCKED}` log lines, open, diagnosed, escalated) after {worked:?} on {}; first lines:\n{}",
        backend.name(),
        first_lines(&service, LOCKED)
    );
}

fn first_lines(service: &Service, needle: &str) -> String {
    service
        .log_text()
        .lines()
        .filter(|l| l.contains(needle))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n")
}

on_both_stores!(
    alerts_posted_one_after_another_are_all_worked_without_lock_errors,
    a_storm_of_distinct_alerts_with_the_default_probes_stays_within_memory_bounds,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_incidents_on_sqlite_are_diagnosed_and_escalated_without_lock_errors() {
    let _one = SERIAL.lock().await;
    // More diagnoses at once than by default: more writers competing for the store.
    let config = probes_at_closed_ports().replacen("[probes]\n", "[probes]\nconcurrency = 16\n", 1)
        + "[remediation]\nwindow = 48\n";
    let service = Service::start(BINARY, Backend::Sqlite, &config).await;

    let failed = post_distinct(&service.webhook_url(), "backlog", 5000, 50, 4).await;
    assert_eq!(failed, 0, "deliveries not accepted");
    let worked = all_worked(&service, Duration::from_secs(420)).await;

    let diagnosed = service.count("SELECT COUNT(*) FROM diagnoses").await;
    let escalated = service
        .count("SELECT COUNT(*) FROM incidents WHERE status = 'escalated'")
        .await;
    let locked = service.log_lines_with(LOCKED);
    assert_eq!(
        (locked, diagnosed, escalated),
        (0, 5000, 5000),
        "(`{LOCKED}` log lines, diagnosed, escalated); all worked after {worked:?}; first lines:\n{}",
        first_lines(&service, LOCKED)
    );
    // The service's own errors (the Kubernetes client logs each refused connection as one).
    let errors: Vec<String> = service
        .log_text()
        .lines()
        .filter(|l| {
            l.contains("\"level\":\"ERROR\"") && l.contains("\"target\":\"backup_remediator")
        })
        .take(3)
        .map(str::to_owned)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    eprintln!("5000 incidents worked in {worked:?}");
}

/// 20 000 distinct alerts, 20 per delivery over 8 connections, with the default probes on:
/// memory stays bounded while the engine works the backlog. The target is a peak resident set
/// under 64 MiB for the optimised binary (`cargo bench --bench load` reports it); an unoptimised
/// test build maps some 40 MiB of its own code, so there the heap and stacks (anonymous memory,
/// sampled) are held to 24 MiB instead — what the optimised binary adds to its ~20 MiB of code
/// and libraries stays under 64 MiB with that.
async fn a_storm_of_distinct_alerts_with_the_default_probes_stays_within_memory_bounds(
    backend: Backend,
) {
    let _one = SERIAL.lock().await;
    let service = Service::start(BINARY, backend, &probes_at_closed_ports()).await;
    let sampler = service.sample_anonymous_memory();

    let failed = post_distinct(&service.webhook_url(), "storm", 20_000, 20, 8).await;
    // Let the engine work the backlog a while (the peak is reached while it is deep).
    tokio::time::sleep(Duration::from_secs(15)).await;

    let peak_mib = service.peak_rss_kib() as f64 / 1024.0;
    let anon_mib = sampler.peak_kib() as f64 / 1024.0;
    let stored = service.count("SELECT COUNT(*) FROM incidents").await;
    let escalated = service
        .count("SELECT COUNT(*) FROM incidents WHERE status = 'escalated'")
        .await;
    let locked = service.log_lines_with(LOCKED);
    eprintln!(
        "{}: peak RSS {peak_mib:.1} MiB, peak anonymous {anon_mib:.1} MiB; {stored} incidents, \
         {escalated} escalated so far",
        backend.name()
    );
    assert_eq!(
        (failed, stored, locked),
        (0, 20_000, 0),
        "(failed deliveries, incidents stored, lock errors)"
    );
    assert!(escalated > 0, "the engine worked none of the backlog");
    if cfg!(debug_assertions) {
        assert!(
            anon_mib < 24.0,
            "peak anonymous memory {anon_mib:.1} MiB on {} (limit 24 MiB)",
            backend.name()
        );
    } else {
        assert!(
            peak_mib < 64.0,
            "peak RSS {peak_mib:.1} MiB on {} (limit 64 MiB)",
            backend.name()
        );
    }
}
