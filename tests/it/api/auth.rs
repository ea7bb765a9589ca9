//! Who may change what, and who did: named admins and readers, the recorded decider, rotation
//! of the admins list without a restart, and `GET /api/v1/whoami`.

use std::time::Duration;

use backup_remediator::domain::plan::{Decision, PlannedStep, StepKind, StepState, Transition};
use chrono::Utc;
use serde_json::{json, Value};

use crate::support::app::{
    backup_failed, eventually, payload, spawn_app_with, Backend, TestApp, API_TOKEN,
};

const ALICE: &str = "alice-token-6c0f";
const BOB: &str = "bob-token-19ad";

/// What `backup-remediator token hash` prints for `token`.
fn hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// An incident whose `restart_primary` step waits for a person, as the remediator leaves it.
async fn waiting_for_approval(app: &TestApp, fingerprint: &str) -> (i64, i64) {
    let resp = app
        .post_webhook(&payload(vec![backup_failed(fingerprint)]))
        .await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let id = body["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("incident id in {body}"));
    let step = PlannedStep {
        group: 1,
        kind: StepKind::Action,
        name: "restart_primary".parse().unwrap(),
        target: "statefulset/link-services/postgres-primary".into(),
        decision: Decision::Approve,
        reason: "the runbook".into(),
    };
    let now = Utc::now();
    app.store
        .save_plan(id, &[step], &json!({}), now)
        .await
        .unwrap();
    let step_id = app.store.steps(id).await.unwrap()[0].id;
    let tr = Transition {
        step_id,
        from: &[StepState::Planned],
        to: StepState::WaitingApproval,
        reason: "",
        output: None,
        decided_by: None,
        at: now,
        event: "approval_requested",
        fence: None,
    };
    assert!(app.store.transition(&tr, &json!({})).await.unwrap());
    (id, step_id)
}

async fn decide(
    app: &TestApp,
    (id, step): (i64, i64),
    verb: &str,
    token: &str,
    x_actor: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!(
            "{}/api/v1/incidents/{id}/actions/{step}/{verb}",
            app.address
        ))
        .bearer_auth(token);
    if let Some(a) = x_actor {
        req = req.header("X-Actor", a);
    }
    req.json(&json!({"comment": "primary checked"}))
        .send()
        .await
        .unwrap()
}

on_both_stores!(an_approval_sent_by_alices_token_with_x_actor_mallory_is_recorded_as_alice);

async fn an_approval_sent_by_alices_token_with_x_actor_mallory_is_recorded_as_alice(
    backend: Backend,
) {
    let app = spawn_app_with(
        backend,
        &format!(
            "[auth]\nadmins = [\"alice:{}\", \"bob:{}\"]\n",
            hash(ALICE),
            hash(BOB)
        ),
    )
    .await;
    let waiting = waiting_for_approval(&app, "a1b2c3d4e5f60718").await;

    let resp = decide(&app, waiting, "approve", ALICE, Some("mallory")).await;

    assert_eq!(resp.status(), 200);
    let step: Value = resp.json().await.unwrap();
    assert_eq!(step["decided_by"], "alice", "{step}");
    let stored = app.store.steps(waiting.0).await.unwrap();
    assert_eq!(stored[0].decided_by.as_deref(), Some("alice"));
    let timeline = app.store.timeline(waiting.0).await.unwrap();
    let approved = timeline
        .iter()
        .find(|e| e.kind == "approved")
        .expect("an approved event");
    assert_eq!(approved.detail["by"], "alice", "{:?}", approved.detail);
    assert_eq!(approved.detail["role"], "admin");
    assert_eq!(approved.detail["on_behalf_of"], "mallory");
    let shown = app.incident(waiting.0).await;
    assert!(
        !shown.to_string().contains(ALICE),
        "the token never appears in the API"
    );
}

on_both_stores!(the_single_admin_token_is_recorded_as_admin_whatever_x_actor_says);

async fn the_single_admin_token_is_recorded_as_admin_whatever_x_actor_says(backend: Backend) {
    let app = spawn_app_with(backend, "[auth]\nadmin_token = \"legacy-admin-7e\"\n").await;
    let waiting = waiting_for_approval(&app, "0f0e0d0c0b0a0908").await;

    let resp = decide(&app, waiting, "reject", "legacy-admin-7e", Some("mallory")).await;

    assert_eq!(resp.status(), 200);
    let step: Value = resp.json().await.unwrap();
    assert_eq!(step["decided_by"], "admin", "{step}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_removed_from_the_admins_file_can_no_longer_approve() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admins");
    std::fs::write(&file, format!("alice:{}\nbob:{}\n", hash(ALICE), hash(BOB))).unwrap();
    let app = spawn_app_with(
        Backend::Sqlite,
        &format!(
            "[auth]\nadmins_file = \"{}\"\nreload_interval_ms = 100\n",
            file.display()
        ),
    )
    .await;
    let first = waiting_for_approval(&app, "1111222233334444").await;
    assert_eq!(decide(&app, first, "reject", BOB, None).await.status(), 200);

    // Bob leaves the rota: the Secret is updated, the service is not restarted.
    std::fs::write(&file, format!("alice:{}\n", hash(ALICE))).unwrap();
    let revoked = eventually(Duration::from_secs(5), || async {
        let whoami = app
            .client
            .get(format!("{}/api/v1/whoami", app.address))
            .bearer_auth(BOB)
            .send()
            .await
            .unwrap();
        whoami.status() == 401
    })
    .await;
    assert!(revoked, "bob's token still accepted 5 s after his removal");
    let second = waiting_for_approval(&app, "5555666677778888").await;

    let refused = decide(&app, second, "approve", BOB, None).await;

    assert_eq!(refused.status(), 401);
    assert_eq!(
        app.store.steps(second.0).await.unwrap()[0].state,
        StepState::WaitingApproval,
        "nothing was decided by the revoked token"
    );
    assert_eq!(
        decide(&app, second, "approve", ALICE, None).await.status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_names_the_credential_and_its_role() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &format!(
            "[auth]\nadmins = [\"alice:{}\"]\nreaders = [\"grafana:{}\"]\n",
            hash(ALICE),
            hash("grafana-token")
        ),
    )
    .await;
    let whoami = |token: Option<&'static str>| {
        let mut req = app.client.get(format!("{}/api/v1/whoami", app.address));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap() }
    };

    for (token, name, role) in [
        (ALICE, "alice", "admin"),
        ("grafana-token", "grafana", "reader"),
        (API_TOKEN, "reader", "reader"),
    ] {
        let resp = whoami(Some(token)).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"name": name, "role": role}));
    }
    assert_eq!(whoami(None).await.status(), 401);
    assert_eq!(whoami(Some("wrong")).await.status(), 401);
}
