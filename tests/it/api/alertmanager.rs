//! End to end with the real Prometheus and Alertmanager (Debian's packages), started by the test
//! on loopback: Prometheus scrapes backup metrics the test serves, its rule fires
//! `PostgreSQLBackupFailed`, Alertmanager posts it with a bearer token, and the incident appears
//! through the REST API; when the backup succeeds again, the resolved notification closes it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::app::*;
use crate::support::procs::{free_port, require, start, wait_ready};
use axum::routing::get;

/// Serves `postgres_backup_*` series for Prometheus to scrape.
async fn backup_exporter(last_success: Arc<AtomicI64>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let ts = last_success.load(Ordering::Relaxed);
            async move {
                format!(
                    "# TYPE postgres_backup_last_success_timestamp gauge\n\
                     postgres_backup_last_success_timestamp {ts}\n\
                     # TYPE postgres_backup_errors_total counter\n\
                     postgres_backup_errors_total 3\n"
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_alertmanager_deliver_a_backup_failure_that_the_api_then_shows() {
    require("prometheus");
    require("prometheus-alertmanager");
    let app = spawn_app(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp();
    let last_success = Arc::new(AtomicI64::new(now - 2 * 86_400));
    let exporter = backup_exporter(last_success.clone()).await;
    let (am_port, prom_port) = (free_port(), free_port());

    std::fs::write(
        dir.path().join("am.yml"),
        format!(
            r#"route:
  receiver: backup-remediator
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: backup-remediator
    webhook_configs:
      - url: {}/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {WEBHOOK_TOKEN}
"#,
            app.address
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        r#"groups:
  - name: postgres-backup
    rules:
      - alert: PostgreSQLBackupFailed
        expr: time() - postgres_backup_last_success_timestamp > 86400
        for: 0s
        labels:
          severity: critical
        annotations:
          summary: PostgreSQL backup has not succeeded in 24 hours
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prom.yml"),
        format!(
            r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{am_port}"]
scrape_configs:
  - job_name: postgres-backup
    static_configs:
      - targets: ["{exporter}"]
"#
        ),
    )
    .unwrap();

    // Alertmanager first: an alert fired before Prometheus finds it waits for the resend delay.
    let mut am = start(
        "prometheus-alertmanager",
        &[
            "--config.file=am.yml".into(),
            "--storage.path=am-data".into(),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".into(),
        ],
        dir.path(),
    );
    wait_ready(
        &mut am,
        &format!("http://127.0.0.1:{am_port}/-/ready"),
        dir.path(),
    )
    .await;
    let mut prom = start(
        "prometheus",
        &[
            "--config.file=prom.yml".into(),
            "--storage.tsdb.path=prom-data".into(),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        dir.path(),
    );
    wait_ready(
        &mut prom,
        &format!("http://127.0.0.1:{prom_port}/-/ready"),
        dir.path(),
    )
    .await;

    let arrived = eventually(Duration::from_secs(60), || async {
        !app.incidents().await.is_empty()
    })
    .await;
    assert!(
        arrived,
        "no incident 60 s after Prometheus started; logs in {:?}",
        dir.keep()
    );
    let list = app.incidents().await;
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_i64().unwrap();
    let incident = app.incident(id).await;
    assert_eq!(incident["status"], "open");
    assert_eq!(incident["alertname"], "PostgreSQLBackupFailed");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["labels"]["job"], "postgres-backup");
    assert_eq!(incident["fingerprint"].as_str().unwrap().len(), 16);
    assert!(incident["generator_url"]
        .as_str()
        .unwrap()
        .contains(&format!(":{prom_port}/graph")));
    assert_eq!(
        incident["timeline"][0]["detail"]["receiver"],
        "backup-remediator"
    );

    // The backup succeeds again: the rule stops firing and Alertmanager sends the resolution.
    last_success.store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
    let resolved = eventually(Duration::from_secs(60), || async {
        app.incident(id).await["status"] == "resolved"
    })
    .await;
    assert!(
        resolved,
        "the incident was not resolved 60 s after the backup recovered"
    );
    assert!(app.incident(id).await["resolved_at"].is_string());
    assert_eq!(
        app.incidents().await.len(),
        1,
        "the resolution opened nothing new"
    );
}
