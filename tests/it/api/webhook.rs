//! `POST /webhook/alertmanager`: auth, validation, de-duplication, resolve, store outages.

use std::time::Duration;

use serde_json::{json, Value};

use backup_remediator::store::IncidentFilter;

use crate::support::app::*;

on_both_stores!(
    a_firing_alert_opens_an_incident_with_its_labels_and_an_opened_event,
    fifty_identical_concurrent_posts_open_one_incident_counted_49_times,
    a_resolved_alert_marks_its_incident_resolved_at_alertmanagers_time,
    a_malformed_payload_gets_400_naming_the_problem_and_stores_nothing,
    other_alert_names_are_acknowledged_but_open_no_incident,
);

pub async fn a_firing_alert_opens_an_incident_with_its_labels_and_an_opened_event(
    backend: Backend,
) {
    let app = spawn_app(backend).await;

    let resp = app
        .post_webhook(&payload(vec![backup_failed("6f3d1f1b2c0a9e77")]))
        .await;

    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["alerts"][0]["outcome"], "opened");
    let id = body["alerts"][0]["incident_id"]
        .as_i64()
        .expect("incident id");
    let incident = app.incident(id).await;
    assert_eq!(incident["status"], "open");
    assert_eq!(incident["alertname"], "PostgreSQLBackupFailed");
    assert_eq!(incident["fingerprint"], "6f3d1f1b2c0a9e77");
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["labels"]["namespace"], "link-services");
    assert_eq!(incident["starts_at"], "2026-11-25T01:02:03.456Z");
    assert_eq!(incident["renotified_count"], 0);
    let timeline = incident["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0]["kind"], "opened");
    assert_eq!(timeline[0]["detail"]["receiver"], "backup-remediator");
}

pub async fn fifty_identical_concurrent_posts_open_one_incident_counted_49_times(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = payload(vec![backup_failed("aaaaaaaaaaaaaaaa")]).to_string();

    let posts = (0..50).map(|_| app.webhook_request(body.clone()));
    let responses = futures_join_all(posts).await;

    let mut opened = 0;
    for r in responses {
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        if v["alerts"][0]["outcome"] == "opened" {
            opened += 1;
        }
    }
    assert_eq!(opened, 1, "exactly one post opens the incident");
    let list = app.incidents().await;
    assert_eq!(list.len(), 1, "one incident: {list:?}");
    assert_eq!(list[0]["renotified_count"], 49);

    // The count is durable: after a graceful stop the store itself holds 49.
    let id = list[0]["id"].as_i64().unwrap();
    let db = app.stop_keep_db().await;
    let restarted = spawn_on(db, "").await;
    let incident = restarted.incident(id).await;
    assert_eq!(
        incident["renotified_count"], 49,
        "re-send count written at shutdown"
    );
}

pub async fn a_resolved_alert_marks_its_incident_resolved_at_alertmanagers_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let firing = backup_failed("bbbbbbbbbbbbbbbb");
    let resp = app.post_webhook(&payload(vec![firing])).await;
    let id = resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap();

    let resolved = alert(
        "PostgreSQLBackupFailed",
        "bbbbbbbbbbbbbbbb",
        "resolved",
        "2026-11-25T01:02:03.456Z",
    );
    let resp = app.post_webhook(&payload(vec![resolved.clone()])).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["alerts"][0]["outcome"],
        "resolved"
    );
    // Alertmanager repeats resolved notifications too; the second changes nothing.
    let again = app.post_webhook(&payload(vec![resolved])).await;
    assert_eq!(
        again.json::<Value>().await.unwrap()["alerts"][0]["outcome"],
        "already_resolved"
    );

    let incident = app.incident(id).await;
    assert_eq!(incident["status"], "resolved");
    assert_eq!(incident["resolved_at"], "2026-11-25T03:00:00.500Z");
    let kinds = timeline_kinds(&incident);
    assert_eq!(kinds, ["opened", "resolved"]);
}

pub async fn a_malformed_payload_gets_400_naming_the_problem_and_stores_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let auth = format!("Bearer {WEBHOOK_TOKEN}");
    let mut no_fingerprint = payload(vec![backup_failed("cccccccccccccccc")]);
    no_fingerprint["alerts"][0]
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    let mut bad_time = payload(vec![backup_failed("cccccccccccccccc")]);
    bad_time["alerts"][0]["startsAt"] = json!("yesterday");
    let mut bad_version = payload(vec![backup_failed("cccccccccccccccc")]);
    bad_version["version"] = json!("3");
    let cases: Vec<(String, &str)> = vec![
        ("{\"version\": \"4\", ".into(), "invalid JSON"),
        ("[1,2,3]".into(), "payload"),
        (no_fingerprint.to_string(), "alerts[0]"),
        (bad_time.to_string(), "alerts[0].startsAt"),
        (bad_version.to_string(), "version"),
        (payload(vec![]).to_string(), "alerts"),
    ];

    for (body, names) in cases {
        let resp = app.post_webhook_raw(body.clone(), Some(&auth)).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.expect("a JSON error body");
        let msg = err["error"].as_str().expect("error is a string");
        assert!(msg.contains(names), "error {msg:?} should name {names:?}");
    }
    assert!(
        app.incidents().await.is_empty(),
        "nothing is stored for rejected requests"
    );
}

pub async fn other_alert_names_are_acknowledged_but_open_no_incident(backend: Backend) {
    let app = spawn_app(backend).await;
    let other = alert(
        "WALArchivingFailed",
        "dddddddddddddddd",
        "firing",
        "2026-11-25T01:00:00Z",
    );

    let resp = app.post_webhook(&payload(vec![other])).await;

    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["alerts"][0]["outcome"],
        "ignored"
    );
    assert!(app.incidents().await.is_empty());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .contains("backup_remediator_alerts_ignored_total{alertname=\"WALArchivingFailed\"}"),
        "ignored alerts are counted by name"
    );
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401_and_store_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = payload(vec![backup_failed("eeeeeeeeeeeeeeee")]).to_string();

    for auth in [
        None,
        Some("Bearer wrong"),
        Some(&*format!("Bearer {API_TOKEN}")),
        Some("Basic YW06cGFzcw=="),
    ] {
        let resp = app.post_webhook_raw(body.clone(), auth).await;
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert!(resp.headers().get("www-authenticate").is_some());
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].is_string());
    }
    assert!(app.incidents().await.is_empty());
}

#[tokio::test]
async fn basic_auth_as_alertmanager_sends_it_is_accepted_when_configured() {
    let app = spawn_app_with(
        Backend::Sqlite,
        "[auth]\nwebhook_token = \"\"\nwebhook_basic_user = \"alertmanager\"\nwebhook_basic_password = \"s3cr:et\"",
    )
    .await;
    use base64::Engine;
    let good = base64::engine::general_purpose::STANDARD.encode("alertmanager:s3cr:et");
    let bad = base64::engine::general_purpose::STANDARD.encode("alertmanager:s3cr");
    let body = payload(vec![backup_failed("ffffffffffffffff")]).to_string();

    assert_eq!(
        app.post_webhook_raw(body.clone(), Some(&format!("Basic {bad}")))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post_webhook_raw(body.clone(), Some(&format!("Bearer {WEBHOOK_TOKEN}")))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post_webhook_raw(body, Some(&format!("Basic {good}")))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_stores_nothing() {
    let app = spawn_app_with(Backend::Sqlite, "[server]\nbody_limit_bytes = 4096").await;
    let mut big = payload(vec![backup_failed("1111111111111111")]);
    big["commonAnnotations"]["description"] = json!("x".repeat(8192));

    let resp = app.post_webhook(&big).await;

    assert_eq!(resp.status(), 413);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("4096"), "{err}");
    assert!(app.incidents().await.is_empty());
    // Just under the limit is fine.
    let small = payload(vec![backup_failed("1111111111111111")]);
    assert_eq!(app.post_webhook(&small).await.status(), 202);
}

/// A sender that writes a body many times the limit (Alertmanager with a huge group) still reads
/// the 413 and its reason: the service reads and discards the rest before it answers and closes,
/// instead of closing on a sender still writing (which then sees only a reset or broken pipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_many_times_the_limit_still_gets_its_413_not_a_reset() {
    let app = spawn_app_with(Backend::Sqlite, "[server]\nbody_limit_bytes = 65536").await;
    let mut big = payload(vec![backup_failed("2222222222222222")]);
    big["commonAnnotations"]["description"] = json!("x".repeat(8 << 20));
    let body = big.to_string();

    for attempt in 0..40 {
        let resp = app
            .client
            .post(format!("{}/webhook/alertmanager", app.address))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {WEBHOOK_TOKEN}"))
            .body(body.clone())
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => panic!("attempt {attempt}: no answer, {e:?}"),
        };
        assert_eq!(resp.status(), 413, "attempt {attempt}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("65536"), "{err}");
    }
    assert!(app.incidents().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_open_one_incident_for_the_same_alert() {
    let first = spawn_app(Backend::Postgres).await;
    let db_url = first.db.url();
    // A second replica on the same database (its TestDb is a throwaway; the URL is shared).
    let second = {
        let settings = test_settings(&db_url, "");
        let app = backup_remediator::app::startup::Application::build(settings)
            .await
            .unwrap();
        let address = format!("http://{}", app.local_addr());
        let task = tokio::spawn(app.run_until(std::future::pending()));
        (address, task)
    };
    let body = payload(vec![backup_failed("2222222222222222")]).to_string();
    let client = reqwest::Client::new();

    let posts = (0..20).map(|i| {
        let base = if i % 2 == 0 {
            &first.address
        } else {
            &second.0
        };
        client
            .post(format!("{base}/webhook/alertmanager"))
            .bearer_auth(WEBHOOK_TOKEN)
            .body(body.clone())
            .send()
    });
    let responses = futures_join_all(posts).await;

    let mut opened = 0;
    for r in responses {
        let r = r.unwrap();
        assert_eq!(r.status(), 202);
        if r.json::<Value>().await.unwrap()["alerts"][0]["outcome"] == "opened" {
            opened += 1;
        }
    }
    assert_eq!(
        opened, 1,
        "the unique constraint lets exactly one replica open it"
    );
    assert_eq!(first.incidents().await.len(), 1);
    // Both replicas' re-send counts reach the shared row.
    let ok = eventually(Duration::from_secs(5), || async {
        let filter = IncidentFilter {
            limit: 10,
            ..Default::default()
        };
        first.store.list_incidents(&filter).await.unwrap()[0].renotified_count == 19
    })
    .await;
    second.1.abort();
    assert!(ok, "19 re-sends recorded across both replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_gets_503_with_a_json_reason_so_alertmanager_retries() {
    let app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    app.db.drop_now().await;
    let resp = app
        .post_webhook(&payload(vec![backup_failed("3333333333333333")]))
        .await;

    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("unavailable"),
        "{err}"
    );
    assert_eq!(err["reason"], "unreachable", "{err}");
    assert_eq!(app.get("/readyz").await.status(), 503);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("backup_remediator_webhook_requests_total{outcome=\"store_unavailable\"}")
    );
}

/// Awaits all futures concurrently (no extra dependency for one helper).
pub async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
