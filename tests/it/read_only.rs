//! Runs that must change nothing write nothing: under a dry-run policy (the default without a
//! policy file) and in `replay`, the S3 probe does not write its probe object to the backup
//! bucket; it says in the finding that the write was not checked. Real moto (its recorder
//! lists every request it served), the stand-in Kubernetes API, the real binary for `replay`.

use serde_json::Value;

use crate::support::world;
use world::*;

const RESET_LOG: &str = "Starting backup of link_users\npg_dump: error: could not receive data from server: Connection reset by peer\n";

/// The writes (PUT, POST, DELETE) moto served for the backup bucket since recording started,
/// after checking the bucket was read at all (so that an empty answer means something).
async fn bucket_writes(w: &World) -> Vec<(String, String)> {
    let recorded = w.moto.recorded().await;
    assert!(
        recorded
            .iter()
            .any(|(m, url)| m == "GET" && url.contains(BUCKET)),
        "the S3 probe read the bucket: {recorded:?}"
    );
    recorded
        .into_iter()
        .filter(|(m, url)| m != "GET" && m != "HEAD" && url.contains(BUCKET))
        .collect()
}

fn assert_write_not_checked(s3: &Value, because: &str) {
    let summary = s3["summary"].as_str().unwrap();
    assert!(
        summary.contains("write not checked") && summary.contains(because),
        "{summary}"
    );
    assert!(
        s3["evidence"]["write"]["skipped"]
            .as_str()
            .is_some_and(|s| s.contains(because)),
        "{s3:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_service_writes_no_probe_object_to_the_backup_bucket() {
    // No policy file: dry run.
    let w = World::builder()
        .job_failed_with_logs(RESET_LOG)
        .build()
        .await;
    w.moto.start_recording().await;

    let incident = w.alert_and_diagnose().await;

    let writes = bucket_writes(&w).await;
    assert!(
        writes.is_empty(),
        "a dry run wrote to the bucket: {writes:?}"
    );
    assert_write_not_checked(finding(&incident, "s3"), "dry run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_writes_no_probe_object_to_the_backup_bucket() {
    let w = World::builder()
        .job_failed_with_logs(RESET_LOG)
        .policy(LIVE)
        .no_service()
        .build()
        .await;
    let alert = r#"{"version":"4","status":"firing","receiver":"r","groupKey":"{}:{}","alerts":[{"status":"firing",
        "labels":{"alertname":"PostgreSQLBackupFailed"},"annotations":{},"startsAt":"2026-11-25T01:02:03Z",
        "endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"0123456789abcdef"}]}"#;
    let alert_file = w.dir.path().join("alert.json");
    std::fs::write(&alert_file, alert).unwrap();
    w.moto.start_recording().await;

    let config = w.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_backup-remediator"))
            .arg("--config")
            .arg(&config)
            .args(["replay", "--json"])
            .arg(&alert_file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let writes = bucket_writes(&w).await;
    assert!(writes.is_empty(), "replay wrote to the bucket: {writes:?}");
    let s3 = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["probe"] == "s3")
        .expect("an s3 finding");
    assert_write_not_checked(s3, "replay");
}
