//! Decoding an Alertmanager webhook body (parse + validate): one alert and a group of ten.
//! Run: `cargo bench --bench decode`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

fn body(alerts: usize) -> String {
    let alerts: Vec<serde_json::Value> = (0..alerts)
        .map(|i| {
            serde_json::json!({
                "status": "firing",
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical",
                           "namespace": "link-services", "job": "postgres-backup", "instance": format!("10.0.0.{i}:9187")},
                "annotations": {"summary": "PostgreSQL backup has not succeeded in 24 hours",
                                "runbook_url": "https://example.com/runbooks/postgres-backup-failed"},
                "startsAt": "2026-11-25T01:02:03.456Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=time%28%29+-+postgres_backup_last_success_timestamp",
                "fingerprint": format!("{i:016x}"),
            })
        })
        .collect();
    serde_json::json!({
        "receiver": "backup-remediator", "status": "firing", "alerts": alerts,
        "groupLabels": {"alertname": "PostgreSQLBackupFailed"},
        "commonLabels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical"},
        "commonAnnotations": {"summary": "PostgreSQL backup has not succeeded in 24 hours"},
        "externalURL": "http://alertmanager:9093", "version": "4",
        "groupKey": "{}:{alertname=\"PostgreSQLBackupFailed\"}", "truncatedAlerts": 0
    })
    .to_string()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for n in [1usize, 10] {
        let b = body(n);
        group.throughput(Throughput::Bytes(b.len() as u64));
        group.bench_function(format!("{n}_alerts_{}_bytes", b.len()), |bench| {
            bench.iter(|| {
                backup_remediator::domain::alert::decode(black_box(b.as_bytes())).expect("valid")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
