//! Diagnosis through the running service: an alert opens an incident, the probes run in the
//! background, findings and diagnosis are stored and shown by the API, with the timeline.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::app::*;

/// Accepts TCP connections and never answers: a system that hangs.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

async fn wait_for_diagnosis(app: &TestApp, id: i64) -> Value {
    for _ in 0..150 {
        let incident = app.incident(id).await;
        if !incident["diagnosis"].is_null() {
            return incident;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no diagnosis stored within 15 s: {}",
        app.incident(id).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_probe_is_recorded_as_timed_out_and_the_others_findings_are_stored() {
    let (hung_port, hung) = silent_server().await;
    let closed_port = crate::support::procs::free_port();
    let app = spawn_app_with(
        Backend::Postgres,
        &format!(
            r#"
            [probes]
            enabled = ["backup_metrics", "database", "secret"]
            deadline_ms = 1500
            [prometheus]
            url = "http://127.0.0.1:{hung_port}"
            [target]
            host = "127.0.0.1"
            port = {closed_port}
            [kubernetes]
            api_url = ""
            "#
        ),
    )
    .await;
    let started = Instant::now();

    let resp = app
        .post_webhook(&payload(vec![backup_failed("9999999999999999")]))
        .await;
    let answered = started.elapsed();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap();
    let incident = wait_for_diagnosis(&app, id).await;
    hung.abort();

    assert!(
        answered < Duration::from_millis(1000),
        "the webhook does not wait for probes ({answered:?})"
    );
    let findings = incident["findings"].as_array().unwrap();
    let by = |p: &str| {
        findings
            .iter()
            .find(|f| f["probe"] == p)
            .unwrap_or_else(|| panic!("no {p} finding"))
            .clone()
    };
    let metrics = by("backup_metrics");
    assert_eq!(metrics["status"], "error");
    assert_eq!(metrics["summary"], "timed out after 1500 ms");
    assert!(metrics["duration_ms"].as_u64().unwrap() >= 1500);
    let database = by("database");
    assert_eq!(database["status"], "problem", "{database}");
    assert_eq!(database["signals"][0]["signal"], "database_unreachable");
    assert_eq!(database["signals"][0]["failure"], "refused");
    assert!(
        database["duration_ms"].as_u64().unwrap() < 1500,
        "the database probe did not wait for the hung one"
    );
    assert_eq!(by("secret")["status"], "skipped");

    let d = &incident["diagnosis"];
    assert_eq!(d["scenario"], "database_connection", "{d}");
    assert!(d["summary"]
        .as_str()
        .unwrap()
        .starts_with("Scenario 1 (database connection)"));
    let kinds = timeline_kinds(&incident);
    // The diagnosis part of the timeline; the remediation plan follows it.
    assert_eq!(
        kinds[..6],
        [
            "opened",
            "probes_started",
            "probe_finished",
            "probe_finished",
            "probe_finished",
            "diagnosed"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_left_undiagnosed_is_diagnosed_after_a_restart() {
    // First run: probes off, so the incident stays undiagnosed (as after a crash).
    let app = spawn_app(Backend::Sqlite).await;
    let resp = app
        .post_webhook(&payload(vec![backup_failed("8888888888888888")]))
        .await;
    let id = resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap();
    let db = app.stop_keep_db().await;
    let closed_port = crate::support::procs::free_port();

    let restarted = spawn_on(
        db,
        &format!("[probes]\nenabled = [\"database\"]\ndeadline_ms = 1000\n[target]\nhost = \"127.0.0.1\"\nport = {closed_port}"),
    )
    .await;
    let incident = wait_for_diagnosis(&restarted, id).await;

    assert_eq!(incident["diagnosis"]["scenario"], "database_connection");
    assert_eq!(incident["findings"].as_array().unwrap().len(), 1);
}
