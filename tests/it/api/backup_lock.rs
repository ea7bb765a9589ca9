//! One backup Job per target at a time, whatever started it: manual backups take the target's
//! backup lock (a second request while one runs answers 409 naming the running Job), have a
//! budget in the policy (429 with the reason once it is used up) and accept an
//! `Idempotency-Key` (the same key answers the same backup, with no second Job). Real
//! PostgreSQL store, the test cluster's API server, moto.

use std::time::Duration;

use serde_json::{json, Value};

use super::backups::{setup, Setup, ADMIN_TOKEN};
use crate::support::app::Backend;
use crate::support::cluster::fixtures as fx;

/// POST /api/v1/backups with an `Idempotency-Key`.
async fn post_with_key(s: &Setup, key: &str) -> reqwest::Response {
    s.app
        .client
        .post(format!("{}/api/v1/backups", s.app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", key)
        .json(&json!({}))
        .send()
        .await
        .expect("POST")
}

/// The Jobs the service created, once it has had time to create any it wrongly would.
async fn created_after_a_while(s: &Setup) -> Vec<String> {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.created_jobs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_concurrent_manual_backups_create_one_job_and_four_conflicts_name_it() {
    let s = setup(Backend::Postgres, "").await;

    let answers =
        futures_util::future::join_all((0..5).map(|_| s.post("/api/v1/backups", json!({})))).await;

    let mut started = Vec::new();
    let mut refused = Vec::new();
    for resp in answers {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        match status {
            202 => started.push(body),
            409 => refused.push(body),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(started.len(), 1, "{started:#?} {refused:#?}");
    let job = started[0]["job_name"].as_str().unwrap();
    assert_eq!(refused.len(), 4);
    for r in &refused {
        let why = r["error"].as_str().unwrap();
        assert!(
            why.contains(job),
            "the refusal names the running Job: {why}"
        );
    }
    assert_eq!(created_after_a_while(&s).await, [job]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_backup_is_refused_while_a_verification_job_runs() {
    let s = setup(Backend::Postgres, "").await;
    // A verification's Job (the CronJob's labels), still running.
    s.ns.put(fx::job("postgres-backup-verify-7-3", &s.ns.held()))
        .await;

    let resp = s.post("/api/v1/backups", json!({})).await;

    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("postgres-backup-verify-7-3"),
        "{body}"
    );
    assert!(created_after_a_while(&s).await.is_empty());

    // Once it finished, a manual backup starts.
    s.finish_job("postgres-backup-verify-7-3", true);
    s.ns.wait_job("postgres-backup-verify-7-3", "Complete")
        .await;
    assert_eq!(s.post("/api/v1/backups", json!({})).await.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_answers_the_same_backup_without_a_second_job() {
    let s = setup(Backend::Postgres, "").await;

    let first = post_with_key(&s, "nightly-check-2026-12-07").await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let (job, _) = s.created_job().await;
    // While its Job runs, and after it finished.
    let again = post_with_key(&s, "nightly-check-2026-12-07").await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "{again:#}");
    s.finish_job(&job, false);
    s.backup_finished(first["id"].as_i64().unwrap()).await;
    let later: Value = post_with_key(&s, "nightly-check-2026-12-07")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(later["id"], first["id"], "{later:#}");

    assert_eq!(created_after_a_while(&s).await, [job]);
    // Another key is another request.
    assert_eq!(post_with_key(&s, "another-key").await.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_backups_past_the_policys_budget_are_refused_with_429_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[manual_backups]\nbudget = 1\nbudget_window_minutes = 60\n",
    )
    .unwrap();
    let s = setup(
        Backend::Postgres,
        &format!("[remediation]\npolicy_file = \"{}\"\n", policy.display()),
    )
    .await;
    let first = s.post("/api/v1/backups", json!({})).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let (job, _) = s.created_job().await;
    s.finish_job(&job, false);
    s.backup_finished(first["id"].as_i64().unwrap()).await;

    let resp = s.post("/api/v1/backups", json!({})).await;

    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    let why = body["error"].as_str().unwrap();
    assert!(
        why.contains("budget") && why.contains("60 minutes") && why.contains("budget 1"),
        "{why}"
    );
    assert_eq!(created_after_a_while(&s).await, [job]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_restore_test_while_one_runs_is_a_conflict_naming_it() {
    let s = setup(
        Backend::Postgres,
        &format!(
            // The suite's scratch server is its superuser.
            "[restore_test]\ntarget_url = \"{}\"\nallow_superuser = true\n",
            crate::support::pg::admin_url()
        ),
    )
    .await;
    // The first test's read of the backup Secret takes 3 s: it is running meanwhile.
    s.kube.delay(
        &format!("/api/v1/namespaces/{}/secrets", s.ns.name),
        Duration::from_secs(3),
    );
    let first = s
        .post("/api/v1/restore-tests", json!({"database": "link_users"}))
        .await;
    let status = first.status();
    let first: Value = first.json().await.unwrap();
    assert_eq!(status, 202, "{first}");
    let id = first["restore_tests"][0]["id"].as_i64().unwrap();

    let second = s.post("/api/v1/restore-tests", json!({})).await;

    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    let why = body["error"].as_str().unwrap();
    assert!(why.contains(&format!("restore test {id}")), "{why}");
    let list: Value = s
        .app
        .api_get("/api/v1/restore-tests")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["restore_tests"].as_array().unwrap().len(),
        1,
        "{list:#}"
    );
}
