//! `/healthz`, `/readyz`, `/metrics`.

use serde_json::Value;

use crate::support::app::*;

#[tokio::test]
async fn health_and_readiness_answer_without_credentials() {
    let app = spawn_app(Backend::Sqlite).await;

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["store"], "sqlite");
}

#[tokio::test]
async fn metrics_count_webhook_outcomes_incidents_and_latency() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = payload(vec![backup_failed("e000000000000000")]);
    assert_eq!(app.post_webhook(&body).await.status(), 202);
    assert_eq!(app.post_webhook(&body).await.status(), 202);
    assert_eq!(app.post_webhook_raw("nope", None).await.status(), 401);

    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for series in [
        "backup_remediator_webhook_requests_total{outcome=\"accepted\"}",
        "backup_remediator_webhook_requests_total{outcome=\"unauthorized\"}",
        "backup_remediator_incidents_opened_total",
        "backup_remediator_incidents_deduplicated_total",
        "backup_remediator_http_request_duration_seconds_bucket{method=\"POST\",route=\"/webhook/alertmanager\",status=\"202\",le=\"0.005\"}",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

#[tokio::test]
async fn an_unknown_path_is_a_json_404() {
    let app = spawn_app(Backend::Sqlite).await;
    let resp = app.get("/nope").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "no route for GET /nope"
    );
}
