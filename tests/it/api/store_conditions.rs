//! The store's answer is the sender's answer: a store that is read-only (a failover behind a
//! pooler), full, or rolled a write back answers 503 with its reason, so Alertmanager retries,
//! and the retry stores the alert once. Only an alert the store refuses itself is `failed` + 2xx.

use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::support::app::*;

const ADMIN: &str = "store-conditions-admin-7e2b";

/// Switches the test database's `default_transaction_read_only` (for new connections, as an
/// `ALTER DATABASE … SET` does) and ends the app's open connections, so its next ones see it.
async fn set_read_only(db: &TestDb, on: bool) {
    let TestDb::Postgres { name, .. } = db else {
        panic!("a PostgreSQL test database");
    };
    let mut admin = sqlx::PgConnection::connect(&crate::support::pg::admin_url())
        .await
        .unwrap();
    let value = if on { "on" } else { "off" };
    admin
        .execute(
            format!("ALTER DATABASE {name} SET default_transaction_read_only = {value}").as_str(),
        )
        .await
        .unwrap();
    terminate_app_connections(&mut admin, name).await;
    admin.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_answers_503_with_its_reason_and_the_retried_delivery_stores_one_incident(
) {
    let app = spawn_app(Backend::Postgres).await;
    let delivery = payload(vec![backup_failed("4444444444444444")]);
    set_read_only(&app.db, true).await;

    let resp = app.post_webhook(&delivery).await;

    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 503, "Alertmanager retries only a 5xx: {body}");
    assert_eq!(body["reason"], "read_only", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("read-only"),
        "{body}"
    );

    // The failover is over: Alertmanager's retry stores the alert, once.
    set_read_only(&app.db, false).await;
    let resp = app.post_webhook(&delivery).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["alerts"][0]["outcome"], "opened", "{body}");
    let again: Value = app.post_webhook(&delivery).await.json().await.unwrap();
    assert_eq!(again["alerts"][0]["outcome"], "renotified", "{again}");
    let incidents = app.incidents().await;
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    assert_eq!(incidents[0]["fingerprint"], "4444444444444444");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_on_a_read_only_store_answers_503_and_is_not_half_recorded() {
    let app = spawn_app_with(
        Backend::Postgres,
        &format!("[auth]\nadmin_token = \"{ADMIN}\"\n"),
    )
    .await;
    let (id, steps) =
        crate::support::approvals::waiting_for_approval(&app.store, &["restart_primary"]).await;
    set_read_only(&app.db, true).await;
    let approve = || {
        app.client
            .post(format!(
                "{}/api/v1/incidents/{id}/actions/{}/approve",
                app.address, steps[0]
            ))
            .bearer_auth(ADMIN)
            .json(&json!({"comment": "checked"}))
            .send()
    };

    let resp = approve().await.unwrap();

    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "read_only", "{body}");
    let step = &app.store.steps(id).await.unwrap()[0];
    assert_eq!(
        step.state.as_str(),
        "waiting_approval",
        "nothing half-written"
    );

    set_read_only(&app.db, false).await;
    let resp = approve().await.unwrap();
    assert_eq!(resp.status(), 200, "the same request, retried");
}

/// A write that loses a serialization conflict is rolled back and answered 503 (`conflict`);
/// the retry joins what the winner stored. The conflict is real: the store runs SERIALIZABLE
/// (`ALTER DATABASE … SET default_transaction_isolation`), another replica's transaction has
/// inserted the same alert and commits while the app's insert waits on it, and PostgreSQL
/// refuses the app's `ON CONFLICT` on a row its snapshot cannot see (40001).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serialization_failure_answers_503_conflict_and_the_retry_joins_the_stored_incident() {
    let app = spawn_app(Backend::Postgres).await;
    let TestDb::Postgres { name, url } = &app.db else {
        unreachable!()
    };
    let mut admin = sqlx::PgConnection::connect(&crate::support::pg::admin_url())
        .await
        .unwrap();
    admin
        .execute(
            format!("ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'")
                .as_str(),
        )
        .await
        .unwrap();
    terminate_app_connections(&mut admin, name).await;
    let mut rival = sqlx::PgConnection::connect(url).await.unwrap();
    rival.execute("BEGIN").await.unwrap();
    rival
        .execute(
            "INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, \
             annotations, generator_url, opened_at, updated_at, last_seen_at) VALUES \
             ('5555555555555555', 'PostgreSQLBackupFailed', '2026-11-25T01:02:03.456Z', 'open', \
             'critical', '{}', '{}', '', now(), now(), now())",
        )
        .await
        .unwrap();
    let delivery = payload(vec![backup_failed("5555555555555555")]);
    let first = tokio::spawn(app.webhook_request(delivery.to_string()));
    // The app's insert waits on the rival's uncommitted row; then the rival wins.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    rival.execute("COMMIT").await.unwrap();

    let first = first.await.unwrap();
    let status = first.status();
    let body: Value = first.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "conflict", "{body}");

    let retry: Value = app.post_webhook(&delivery).await.json().await.unwrap();
    assert_eq!(retry["alerts"][0]["outcome"], "renotified", "{retry}");
    assert_eq!(app.incidents().await.len(), 1);
}

/// Ends the app's connections to `db`, so its next ones take the database's new settings.
async fn terminate_app_connections(admin: &mut sqlx::PgConnection, db: &str) {
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .execute(admin)
    .await
    .unwrap();
}
