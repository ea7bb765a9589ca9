//! Approving from Slack: clicks signed exactly as Slack signs them (computed here with the
//! HMAC crate, not the service's code), forged, replayed and unknown-user clicks refused, two
//! replicas receiving the same click deciding once, and the incident's message updated to say
//! who decided — against a stand-in for Slack's Web API and its response_url on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::response::IntoResponse;
use backup_remediator::domain::plan::StepState;
use backup_remediator::store::Store;
use chrono::Utc;
use serde_json::{json, Value};

use crate::support::app::{self as app, Backend, TestApp, TestDb};
use crate::support::approvals::{click, slack_signature};

const SIGNING_SECRET: &str = "canary-signing-secret-8e2f41";
const BOT_TOKEN: &str = "xoxb-canary-bot-5a1";
const APPROVER: &str = "U123ABC";
const STRANGER: &str = "U999ZZZ";

/// What the Slack stand-in received: (path, JSON body).
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Slack's Web API and response_url on a loopback port.
struct FakeSlack {
    url: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(seen): State<Seen>,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> axum::response::Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_owned();
    seen.lock().unwrap().push((path.clone(), body.clone()));
    let ts = body["ts"].as_str().unwrap_or("1700000000.000100");
    axum::Json(json!({ "ok": true, "channel": "C0INCIDENTS", "ts": ts })).into_response()
}

impl FakeSlack {
    async fn start() -> Self {
        let seen = Seen::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, seen, task }
    }

    fn to(&self, path: &str) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with(path))
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The service's settings: the bot posting here, Slack approvals on.
    fn config(&self) -> String {
        format!(
            "[notify]\nslack_api_url = \"{}/api\"\nslack_token = \"{BOT_TOKEN}\"\n\
             slack_channel = \"#db-incidents\"\npoll_interval_ms = 50\n\
             slack_signing_secret = \"{SIGNING_SECRET}\"\nslack_approvers = [\"{APPROVER}\"]\n",
            self.url
        )
    }
}

/// An open incident with a restart of the primary waiting for a person: (incident, step).
async fn waiting_restart(store: &Store) -> (i64, i64) {
    let (id, steps) =
        crate::support::approvals::waiting_for_approval(store, &["restart_primary"]).await;
    (id, steps[0])
}

async fn post_click(
    app: &TestApp,
    body: &str,
    timestamp: i64,
    signature: &str,
) -> reqwest::Response {
    app.client
        .post(format!("{}/slack/interactions", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST /slack/interactions")
}

async fn signed(app: &TestApp, body: &str) -> reqwest::Response {
    let now = Utc::now().timestamp();
    post_click(app, body, now, &slack_signature(SIGNING_SECRET, now, body)).await
}

async fn step_of(store: &Store, id: i64) -> backup_remediator::domain::plan::Step {
    store.steps(id).await.unwrap().remove(0)
}

on_both_stores!(a_signed_click_by_an_approver_decides_and_the_message_says_who);

async fn a_signed_click_by_an_approver_decides_and_the_message_says_who(backend: Backend) {
    // Arrange: the incident's message is posted with the buttons.
    let slack = FakeSlack::start().await;
    let mut app = app::spawn_app_with(backend, &slack.config()).await;
    let (id, step) = waiting_restart(&app.store).await;
    // The message is posted once the diagnosis is in and updated as the plan waits: the
    // rendering that shows the waiting step carries its buttons.
    let has_buttons = |m: &Value| m["blocks"].to_string().contains("\"actions\"");
    assert!(
        app::eventually(Duration::from_secs(10), || async {
            slack.to("/api/chat.").iter().any(has_buttons)
        })
        .await
    );
    let posted = slack
        .to("/api/chat.")
        .into_iter()
        .find(has_buttons)
        .unwrap();
    let buttons: Vec<&Value> = posted["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .collect();
    assert_eq!(buttons.len(), 1, "{posted:#}");
    let values: Vec<(&str, &str)> = buttons[0]["elements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action_id"].as_str().unwrap(),
                e["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        posted.to_string().contains("the buttons below, or `POST"),
        "{posted:#}"
    );
    let value = format!("{id}:{step}");
    assert_eq!(
        values,
        [
            ("approve_step", value.as_str()),
            ("reject_step", value.as_str())
        ]
    );

    // Act
    let body = click(
        APPROVER,
        "approve_step",
        id,
        step,
        &format!("{}/actions/T0/1/abc", slack.url),
    );
    let resp = signed(&app, &body).await;

    // Assert: decided as the Slack user, through the API's path (timeline event, decider).
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["response_type"], "ephemeral");
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved `restart_primary`"),
        "{answer}"
    );
    let decided = step_of(&app.store, id).await;
    assert_eq!(decided.state, StepState::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("slack:U123ABC (alice)"));
    let incident = app.incident(id).await;
    let approved = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "approved")
        .expect("an approved event");
    assert_eq!(approved["detail"]["by"], "slack:U123ABC (alice)");
    // The message is updated in place: who decided, and no buttons left.
    assert!(
        app::eventually(Duration::from_secs(10), || async {
            slack
                .to("/api/chat.update")
                .iter()
                .any(|u| u.to_string().contains("approved by slack:U123ABC (alice)"))
        })
        .await,
        "{:?}",
        slack.to("/api/chat.update")
    );
    let update = slack.to("/api/chat.update").pop().unwrap();
    assert!(!update.to_string().contains("approve_step"), "{update:#}");
    assert_eq!(
        update["ts"], "1700000000.000100",
        "the posted message, in place"
    );
    // Slack was answered through the response_url too.
    assert!(
        app::eventually(Duration::from_secs(5), || async {
            !slack.to("/actions/T0/1/abc").is_empty()
        })
        .await
    );
    // A second click is a refusal naming who decided.
    let again: Value = signed(&app, &body).await.json().await.unwrap();
    assert!(
        again["text"]
            .as_str()
            .unwrap()
            .contains("already decided by slack:U123ABC (alice)"),
        "{again}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_unsigned_clicks_are_refused_and_strangers_get_an_ephemeral_no() {
    // Arrange
    let slack = FakeSlack::start().await;
    let mut app = app::spawn_app_with(Backend::Sqlite, &slack.config()).await;
    let (id, step) = waiting_restart(&app.store).await;
    let body = click(APPROVER, "approve_step", id, step, "");
    let now = Utc::now().timestamp();

    // Act / Assert: a signature made with another secret.
    let forged = post_click(
        &app,
        &body,
        now,
        &slack_signature("not-the-secret", now, &body),
    )
    .await;
    assert_eq!(forged.status(), 401);
    let why: Value = forged.json().await.unwrap();
    assert!(
        why["error"].as_str().unwrap().contains("does not match"),
        "{why}"
    );
    // A real signature over another body (the click of someone else, re-targeted).
    let other = click(APPROVER, "reject_step", id, step, "");
    let swapped = post_click(
        &app,
        &other,
        now,
        &slack_signature(SIGNING_SECRET, now, &body),
    )
    .await;
    assert_eq!(swapped.status(), 401);
    // A genuine request replayed six minutes later, and one dated six minutes ahead.
    for at in [now - 360, now + 360] {
        let replay = post_click(&app, &body, at, &slack_signature(SIGNING_SECRET, at, &body)).await;
        assert_eq!(replay.status(), 401);
        let why: Value = replay.json().await.unwrap();
        assert!(
            why["error"].as_str().unwrap().contains("5 minutes"),
            "{why}"
        );
    }
    // No signature at all.
    let bare = app
        .client
        .post(format!("{}/slack/interactions", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    // A validly signed click by someone who is not an approver.
    let stranger = click(
        STRANGER,
        "approve_step",
        id,
        step,
        &format!("{}/actions/T0/2/xyz", slack.url),
    );
    let resp = signed(&app, &stranger).await;
    assert_eq!(resp.status(), 200);
    let refusal: Value = resp.json().await.unwrap();
    assert_eq!(refusal["response_type"], "ephemeral");
    assert!(refusal["text"]
        .as_str()
        .unwrap()
        .contains("not in notify.slack_approvers"));
    assert!(
        app::eventually(Duration::from_secs(5), || async {
            slack
                .to("/actions/T0/2/xyz")
                .first()
                .is_some_and(|b| b["response_type"] == "ephemeral")
        })
        .await
    );
    // An oversized body is refused before anything is read.
    let huge = "payload=".to_owned() + &"a".repeat(2 * 1024 * 1024);
    let big = post_click(
        &app,
        &huge,
        now,
        &slack_signature(SIGNING_SECRET, now, &huge),
    )
    .await;
    assert_eq!(big.status(), 413);

    // Nothing was decided, and the secret is nowhere in what the service stored or answers.
    assert_eq!(
        step_of(&app.store, id).await.state,
        StepState::WaitingApproval
    );
    let incident = app.incident(id).await.to_string();
    assert!(!incident.contains("approved"), "{incident}");
    assert!(!incident.contains(SIGNING_SECRET));
    let doc = app.get("/api/v1/openapi.json").await.text().await.unwrap();
    assert!(doc.contains("/slack/interactions"));
    assert!(!doc.contains(SIGNING_SECRET));
    for (_, b) in slack.seen.lock().unwrap().iter() {
        assert!(!b.to_string().contains(SIGNING_SECRET));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_receiving_the_same_click_decide_once() {
    // Arrange: two services on one PostgreSQL store.
    let slack = FakeSlack::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let twin = match &db {
        TestDb::Postgres { name, url } => TestDb::Postgres {
            name: name.clone(),
            url: url.clone(),
        },
        TestDb::Sqlite { .. } => unreachable!(),
    };
    let mut a = app::spawn_on(db, &slack.config()).await;
    let mut b = app::spawn_on(twin, &slack.config()).await;
    let (id, step) = waiting_restart(&a.store).await;
    let body = click(APPROVER, "approve_step", id, step, "");

    // Act: Slack retried to the other replica while the first was answering.
    let (ra, rb) = tokio::join!(signed(&a, &body), signed(&b, &body));

    // Assert
    let mut texts = Vec::new();
    for r in [ra, rb] {
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        texts.push(answer["text"].as_str().unwrap().to_owned());
    }
    let decided = texts.iter().filter(|t| t.starts_with("Approved")).count();
    assert_eq!(decided, 1, "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains("already decided by slack:U123ABC (alice)")),
        "{texts:?}"
    );
    let incident = a.incident(id).await;
    let approvals = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approved")
        .count();
    assert_eq!(approvals, 1);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approvers_file_is_read_at_each_click_so_approvers_change_without_a_restart() {
    // Arrange: approvers from the config and from a file (a mounted ConfigMap key, say).
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slack-approvers");
    std::fs::write(&file, "# on call this week\n").unwrap();
    let config = slack.config() + &format!("slack_approvers_file = \"{}\"\n", file.display());
    let app = app::spawn_app_with(Backend::Sqlite, &config).await;
    let (id, step) = waiting_restart(&app.store).await;
    let by = |user: &str| {
        click(
            user,
            "approve_step",
            id,
            step,
            &format!("{}/actions/T0/3/abc", slack.url),
        )
    };
    let refused = |answer: &Value| {
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .contains("not in notify.slack_approvers")
    };
    let answer: Value = signed(&app, &by(STRANGER)).await.json().await.unwrap();
    assert!(refused(&answer), "{answer}");

    // Act: the stranger joins the on-call rotation; nothing is restarted or signalled.
    std::fs::write(&file, format!("{STRANGER}\n")).unwrap();
    let answer: Value = signed(&app, &by(STRANGER)).await.json().await.unwrap();

    // Assert
    assert!(!refused(&answer), "{answer}");
    assert_ne!(
        step_of(&app.store, id).await.state,
        StepState::WaitingApproval
    );
}
