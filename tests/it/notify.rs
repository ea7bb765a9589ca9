//! Notifications and escalation, against a stand-in for Slack's Web API, a Slack incoming
//! webhook and PagerDuty's Events API v2 (a local axum server that records every request and
//! can be told to fail), over real stores. The notifier's clock is a fake one the tests move.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use backup_remediator::config::Settings;
use backup_remediator::domain::diagnosis::{Diagnosis, Evidence, Scenario};
use backup_remediator::domain::finding::{Finding, Status};
use backup_remediator::domain::incident::IncidentStatus;
use backup_remediator::domain::plan::{Decision, PlannedStep, StepKind, StepState, Transition};
use backup_remediator::store::Store;
use backup_remediator::workflow::notify::{Clock, ManualClock, Notifier};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

use crate::support::app::{
    backup_failed, connect, eventually, fresh_store, payload, spawn_app_with, Backend, TestDb,
};
use crate::support::incident::new_incident;

const SLACK_TOKEN: &str = "xoxb-canary-slack-token-3f9e";
const ROUTING_KEY: &str = "canary-routing-key-77ab";
const HOOK_SECRET: &str = "canary-hook-secret-0c4d";
const DB_PASSWORD: &str = "canary-db-password-19fe";
const GENERATOR: &str = "http://prometheus:9090/graph?g0.expr=postgres_backup_errors_total";
const EXTERNAL: &str = "https://br.example.com";

// ---------------------------------------------------------------------------------------------
// The stand-in for Slack and PagerDuty.

#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) path: String,
    authorization: String,
    pub(crate) body: Value,
    raw: String,
}

/// A scripted answer: status, Retry-After, body.
type Reply = (u16, Option<u64>, Value);

#[derive(Default)]
struct World {
    requests: Vec<Req>,
    /// Answers to give before behaving, per path prefix ("/slack", "/pd", "/hook").
    failures: Vec<(String, VecDeque<Reply>)>,
    next_ts: u64,
    /// How long every answer takes (a hanging Slack).
    delay: Duration,
}

pub(crate) struct ThirdParties {
    url: String,
    world: Arc<Mutex<World>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ThirdParties {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(world): State<Arc<Mutex<World>>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = world.lock().unwrap().delay;
    tokio::time::sleep(delay).await;
    let raw = String::from_utf8_lossy(&body).into_owned();
    let path = uri.path().to_owned();
    let mut w = world.lock().unwrap();
    w.requests.push(Req {
        path: path.clone(),
        authorization: headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
    });
    for (prefix, queue) in w.failures.iter_mut() {
        if path.starts_with(prefix.as_str()) {
            if let Some((status, after, body)) = queue.pop_front() {
                let mut resp =
                    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
                if let Some(a) = after {
                    resp.headers_mut()
                        .insert("retry-after", a.to_string().parse().unwrap());
                }
                return resp;
            }
        }
    }
    if path.starts_with("/slack/api/chat.postMessage") {
        w.next_ts += 1;
        let ts = format!("1700000000.{:06}", w.next_ts);
        axum::Json(json!({ "ok": true, "channel": "C0INCIDENTS", "ts": ts })).into_response()
    } else if path.starts_with("/slack/api/chat.update") {
        let body: Value = w.requests.last().unwrap().body.clone();
        axum::Json(json!({ "ok": true, "channel": body["channel"], "ts": body["ts"] }))
            .into_response()
    } else if path.starts_with("/pd/") {
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "status": "success", "message": "Event processed" })),
        )
            .into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

impl ThirdParties {
    pub(crate) async fn start() -> Self {
        let world = Arc::new(Mutex::new(World::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, world, task }
    }

    fn fail(&self, prefix: &str, replies: Vec<Reply>) {
        self.world
            .lock()
            .unwrap()
            .failures
            .push((prefix.to_owned(), replies.into()));
    }

    fn requests(&self) -> Vec<Req> {
        self.world.lock().unwrap().requests.clone()
    }

    fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    pub(crate) fn to(&self, prefix: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Settings TOML pointing the notifier here.
    pub(crate) fn config(&self, bot: bool, pagerduty: bool) -> String {
        let mut s = format!(
            "[notify]\nslack_api_url = \"{u}/slack/api\"\npagerduty_url = \"{u}/pd/v2/enqueue\"\n\
             external_url = \"{EXTERNAL}\"\nslack_channel = \"#db-incidents\"\n\
             request_timeout_ms = 2000\npoll_interval_ms = 50\n",
            u = self.url
        );
        if bot {
            s.push_str(&format!("slack_token = \"{SLACK_TOKEN}\"\n"));
        } else {
            s.push_str(&format!(
                "slack_webhook_url = \"{}/hook/T000/B000/{HOOK_SECRET}\"\n",
                self.url
            ));
        }
        if pagerduty {
            s.push_str(&format!("pagerduty_routing_key = \"{ROUTING_KEY}\"\n"));
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Incidents, built through the store as the engine and the remediator build them.

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

/// A notifier over a fresh SQLite store, on a fake clock at [`t0`].
struct Rig {
    _db: TestDb,
    store: Store,
    clock: Arc<ManualClock>,
    notifier: Notifier,
}

async fn rig(toml: &str) -> Rig {
    let (db, store) = fresh_store(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let notifier = Notifier::new(store.clone(), &settings(toml), clock.clone());
    Rig {
        _db: db,
        store,
        clock,
        notifier,
    }
}

fn settings(extra: &str) -> Settings {
    Settings::from_toml(&format!(
        "[database]\nurl = \"postgres://backup:{DB_PASSWORD}@db:5432/x\"\n{extra}"
    ))
    .unwrap()
}

async fn open(store: &Store, at: DateTime<Utc>) -> i64 {
    new_incident()
        .at(at)
        .labels(
            json!({ "alertname": "PostgreSQLBackupFailed", "severity": "critical",
                        "namespace": "link-services" }),
        )
        .annotations(json!({ "summary": "backup failed" }))
        .generator_url(GENERATOR)
        .open(store)
        .await
}

/// Findings (the metrics probe saw the last success 25 h before `at`; a careless finding holds
/// a password) and an S3-access diagnosis.
async fn diagnose(store: &Store, id: i64, at: DateTime<Utc>) {
    let last = at - chrono::Duration::hours(25);
    let finding = |probe: &str, evidence: Value| Finding {
        probe: probe.into(),
        status: Status::Problem,
        summary: format!("{probe} found a problem"),
        evidence,
        signals: vec![],
        started_at: at,
        duration_ms: 12,
    };
    let findings = vec![
        finding(
            "backup_metrics",
            json!({ "last_success": last, "age_seconds": 25 * 3600 }),
        ),
        finding("secret", json!({ "password": DB_PASSWORD })),
    ];
    let diagnosis = Diagnosis {
        scenario: Scenario::S3Access,
        confidence: 0.9,
        summary: "The backup user may not write to the bucket.".into(),
        evidence: vec![
            Evidence {
                probe: "iam".into(),
                kind: "direct".into(),
                text: "s3:PutObject is denied by postgres-backup-policy".into(),
            },
            Evidence {
                probe: "backup_job".into(),
                kind: "log".into(),
                text: "upload failed: AccessDenied <PutObject>".into(),
            },
        ],
        also: vec![],
        context: vec![],
    };
    assert!(store
        .save_diagnosis(id, &findings, &diagnosis, at)
        .await
        .unwrap());
}

/// Moves a step planned → running → succeeded, as the remediator does.
async fn run_step(store: &Store, step_id: i64, at: DateTime<Utc>) {
    for (from, to, event) in [
        (
            &[StepState::Planned][..],
            StepState::Running,
            "step_started",
        ),
        (
            &[StepState::Running][..],
            StepState::Succeeded,
            "step_finished",
        ),
    ] {
        let tr = Transition {
            step_id,
            from,
            to,
            reason: "",
            output: None,
            decided_by: None,
            at,
            event,
            fence: None,
        };
        assert!(store.transition(&tr, &json!({})).await.unwrap());
    }
}

/// The incident is handed to people (as the remediator or the deadline does), for `reason`.
async fn escalate(store: &Store, id: i64, at: DateTime<Utc>, reason: impl std::fmt::Display) {
    let detail = json!({ "reason": reason.to_string() });
    assert!(store
        .settle(id, IncidentStatus::Escalated, at, &detail)
        .await
        .unwrap());
}

/// Alertmanager reports the incident's alert resolved.
async fn clear_alert(store: &Store, id: i64, at: DateTime<Utc>) {
    let incident = store.get_incident(id).await.unwrap().unwrap();
    store
        .resolve_by_alert(&incident.fingerprint, incident.starts_at, at, &json!({}))
        .await
        .unwrap();
}

/// A plan with one automatic action (run, succeeded) and one waiting for an approval.
async fn plan_with_approval(store: &Store, id: i64, at: DateTime<Utc>) -> i64 {
    let step = |name: &str, decision| PlannedStep {
        group: 1,
        kind: StepKind::Action,
        name: name.parse().unwrap(),
        target: "statefulset/link-services/postgres-primary".into(),
        decision,
        reason: "the runbook".into(),
    };
    store
        .save_plan(
            id,
            &[
                step("rerun_backup", Decision::Auto),
                step("restart_primary", Decision::Approve),
            ],
            &json!({}),
            at,
        )
        .await
        .unwrap();
    let steps = store.steps(id).await.unwrap();
    run_step(store, steps[0].id, at).await;
    let approve = format!("/api/v1/incidents/{id}/actions/{}/approve", steps[1].id);
    let detail = json!({ "step": steps[1].id, "name": "restart_primary",
        "target": "statefulset/link-services/postgres-primary", "state": "waiting_approval",
        "output": { "approve": approve } });
    let tr = Transition {
        step_id: steps[1].id,
        from: &[StepState::Planned],
        to: StepState::WaitingApproval,
        reason: "",
        output: None,
        decided_by: None,
        at,
        event: "approval_requested",
        fence: None,
    };
    store.transition(&tr, &detail).await.unwrap();
    steps[1].id
}

fn kinds(events: &[backup_remediator::domain::incident::TimelineEvent]) -> Vec<String> {
    events.iter().map(|e| e.kind.clone()).collect()
}

fn header(body: &Value) -> String {
    assert_eq!(body["blocks"][0]["type"], "header", "{body}");
    body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_slack_message_is_posted_then_updated_in_place_and_pagerduty_follows_the_escalation() {
    // Arrange
    let parties = ThirdParties::start().await;
    let Rig {
        _db,
        store,
        clock,
        notifier,
    } = rig(&parties.config(true, true)).await;
    let id = open(&store, t0()).await;

    // Act 1: an open incident without a diagnosis is not worth a message yet, nor one whose
    // alert cleared before it was diagnosed.
    let flapped = open(&store, t0() - chrono::Duration::minutes(1)).await;
    clear_alert(&store, flapped, t0()).await;
    notifier.tick().await;
    assert!(parties.requests().is_empty());

    // Act 2: diagnosed.
    diagnose(&store, id, t0()).await;
    clock.advance(chrono::Duration::minutes(1));
    notifier.tick().await;

    // Assert: one chat.postMessage, Block Kit, with the token only in the header.
    let reqs = parties.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let post = &reqs[0];
    assert_eq!(post.path, "/slack/api/chat.postMessage");
    assert_eq!(post.authorization, format!("Bearer {SLACK_TOKEN}"));
    assert_eq!(post.body["channel"], "#db-incidents");
    let h = header(&post.body);
    assert!(
        h.contains("Diagnosed") && h.contains("scenario 4: S3 access"),
        "{h}"
    );
    let fields: Vec<&str> = post.body["blocks"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(
        fields.iter().any(|f| f.starts_with("*Status*")),
        "{fields:?}"
    );
    assert!(
        fields
            .iter()
            .any(|f| f.contains("*Last good backup*\n25 h 1 min ago (RPO target 24 h: BREACHED)")),
        "{fields:?}"
    );
    let text = post.raw.clone();
    assert!(text.contains("s3:PutObject is denied by postgres-backup-policy"));
    assert!(
        text.contains("AccessDenied &lt;PutObject&gt;"),
        "mrkdwn is escaped"
    );
    let context = post.body["blocks"].as_array().unwrap().last().unwrap();
    assert_eq!(context["type"], "context");
    let links = context["elements"][0]["text"].as_str().unwrap();
    assert!(
        links.contains(&format!("<{EXTERNAL}/ui/incidents/{id}|Incident #{id}>")),
        "{links}"
    );
    assert!(
        links.contains(&format!("<{GENERATOR}|Alert source>")),
        "{links}"
    );

    // Act 3: the plan ran an action and waits for an approval.
    let waiting = plan_with_approval(&store, id, t0() + chrono::Duration::minutes(2)).await;
    notifier.tick().await;
    let update = parties.requests().last().unwrap().clone();
    assert_eq!(update.path, "/slack/api/chat.update");
    assert_eq!(update.body["ts"], post_ts(&parties));
    assert_eq!(
        update.body["channel"], "C0INCIDENTS",
        "the channel id Slack answered"
    );
    assert!(update.raw.contains("Done automatically"), "{}", update.raw);
    assert!(update.raw.contains("`rerun_backup`"), "{}", update.raw);
    assert!(
        update.raw.contains(&format!(
            "POST {EXTERNAL}/api/v1/incidents/{id}/actions/{waiting}/approve"
        )),
        "{}",
        update.raw
    );

    // Act 4: escalated, then resolved.
    escalate(
        &store,
        id,
        t0() + chrono::Duration::minutes(3),
        "IAM is security-owned",
    )
    .await;
    notifier.tick().await;
    notifier.tick().await; // nothing new: nothing sent
    clear_alert(&store, id, t0() + chrono::Duration::minutes(30)).await;
    notifier.tick().await;

    // Assert: the order of deliveries, one message all along, one page, one resolve.
    assert_eq!(
        parties.paths(),
        [
            "/slack/api/chat.postMessage",
            "/slack/api/chat.update",
            "/slack/api/chat.update",
            "/pd/v2/enqueue",
            "/slack/api/chat.update",
            "/pd/v2/enqueue",
        ],
    );
    let updates = parties.to("/slack/api/chat.update");
    assert!(updates.iter().all(|u| u.body["ts"] == post_ts(&parties)));
    assert!(header(&updates[1].body).contains("Escalated"));
    assert!(updates[1].raw.contains("IAM is security-owned"));
    assert!(header(&updates[2].body).contains("Resolved"));
    let pd = parties.to("/pd/");
    assert_eq!(pd[0].body["event_action"], "trigger");
    assert_eq!(pd[0].body["routing_key"], ROUTING_KEY);
    assert_eq!(pd[0].body["payload"]["severity"], "critical");
    let summary = pd[0].body["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("scenario 4: S3 access") && summary.contains("BREACHED"),
        "{summary}"
    );
    assert!(
        summary.contains("backup of link-services failing"),
        "the page names its target: {summary}"
    );
    assert_eq!(
        pd[0].body["payload"]["custom_details"]["target"],
        "link-services"
    );
    assert!(header(&updates[1].body).contains("link-services"));
    assert_eq!(pd[1].body["event_action"], "resolve");
    let key = format!("backup-remediator-link-services-{id}");
    assert!(pd.iter().all(|r| r.body["dedup_key"] == key.as_str()));

    let timeline = store.timeline(id).await.unwrap();
    let sent: Vec<&str> = timeline
        .iter()
        .filter(|e| e.kind == "notification_sent")
        .map(|e| e.detail["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        [
            "chat.postMessage",
            "chat.update",
            "chat.update",
            "trigger",
            "chat.update",
            "resolve"
        ]
    );
}

fn post_ts(parties: &ThirdParties) -> Value {
    assert_eq!(parties.to("/slack/api/chat.postMessage").len(), 1);
    json!("1700000000.000001")
}

on_both_stores!(
    outages_end_in_one_up_to_date_delivery_and_nothing_is_lost_across_a_restart,
    the_two_hour_rule_counts_from_the_stored_open_time_across_a_restart,
);

async fn outages_end_in_one_up_to_date_delivery_and_nothing_is_lost_across_a_restart(
    backend: Backend,
) {
    // Arrange: Slack answers 429 (Retry-After 30 s), then 500, then ok:false; PagerDuty 503 once.
    let parties = ThirdParties::start().await;
    parties.fail(
        "/slack",
        vec![
            (
                429,
                Some(30),
                json!({ "ok": false, "error": "ratelimited" }),
            ),
            (500, None, json!({})),
            (200, None, json!({ "ok": false, "error": "internal_error" })),
        ],
    );
    parties.fail("/pd", vec![(503, None, json!({}))]);
    let (_db, store) = fresh_store(backend).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let cfg = settings(&parties.config(true, true));
    let id = open(&store, t0()).await;
    diagnose(&store, id, t0()).await;

    // Act: 429, and Retry-After is honoured.
    let notifier = Notifier::new(store.clone(), &cfg, clock.clone());
    notifier.tick().await;
    clock.advance(chrono::Duration::seconds(10));
    notifier.tick().await;
    assert_eq!(parties.requests().len(), 1, "Retry-After 30 s honoured");
    clock.advance(chrono::Duration::seconds(25));
    notifier.tick().await; // 500
    escalate(&store, id, clock.now(), "no safe fix").await;
    notifier.tick().await; // the newer rendering replaces the pending one; PagerDuty 503
    drop(notifier);

    // Restart: a new notifier over the same store, after the outage.
    let notifier = Notifier::new(store.clone(), &cfg, clock.clone());
    for _ in 0..4 {
        clock.advance(chrono::Duration::minutes(10));
        notifier.tick().await;
    }

    // Assert: exactly one message reached Slack, the newest one; one page.
    let slack = parties.to("/slack");
    let ok_posts: Vec<&Req> = slack.iter().skip(3).collect();
    assert_eq!(ok_posts.len(), 1, "{slack:?}");
    assert_eq!(ok_posts[0].path, "/slack/api/chat.postMessage");
    assert!(header(&ok_posts[0].body).contains("Escalated"));
    let pd = parties.to("/pd");
    assert_eq!(pd.len(), 2, "one 503, one accepted");
    assert_eq!(pd[0].body, pd[1].body, "the same event re-sent");
    let timeline = store.timeline(id).await.unwrap();
    let k = kinds(&timeline);
    assert_eq!(k.iter().filter(|k| *k == "notification_failed").count(), 4);
    assert_eq!(k.iter().filter(|k| *k == "notification_sent").count(), 2);
    let failed = timeline
        .iter()
        .find(|e| e.kind == "notification_failed")
        .unwrap();
    assert!(failed.detail["error"].as_str().unwrap().contains("429"));
    let deliveries = store.deliveries(id).await.unwrap();
    assert!(
        deliveries.iter().all(|d| d.state == "sent"),
        "{deliveries:?}"
    );
}

async fn the_two_hour_rule_counts_from_the_stored_open_time_across_a_restart(backend: Backend) {
    // Arrange: an incident opened at t0 whose last good backup is 25 h older.
    let (_db, store) = fresh_store(backend).await;
    let clock = Arc::new(ManualClock::new(t0() + chrono::Duration::minutes(119)));
    let cfg = settings("");
    let id = open(&store, t0()).await;
    diagnose(&store, id, t0()).await;
    let fixed = open(&store, t0() - chrono::Duration::hours(5)).await;
    let restore_test = new_incident()
        .fingerprint("restoretest00001")
        .alertname("BackupRestoreTestFailed")
        .severity("warning")
        .starts_at(t0())
        .opened_at(t0() - chrono::Duration::hours(5))
        .labels(json!({}))
        .open(&store)
        .await;
    store
        .settle(fixed, IncidentStatus::Remediated, t0(), &json!({}))
        .await
        .unwrap();

    // Act: 1 h 59 min after opening nothing happens.
    let notifier = Notifier::new(store.clone(), &cfg, clock.clone());
    assert_eq!(notifier.escalate_overdue().await.unwrap(), 0);
    drop(notifier);
    // The process restarts; the deadline passes.
    clock.advance(chrono::Duration::minutes(2));
    let notifier = Notifier::new(store.clone(), &cfg, clock.clone());
    assert_eq!(notifier.escalate_overdue().await.unwrap(), 1);
    assert_eq!(notifier.escalate_overdue().await.unwrap(), 0, "once");

    // Assert: escalated, with the RPO impact against the target.
    let incident = store.get_incident(id).await.unwrap().unwrap();
    assert_eq!(incident.status, IncidentStatus::Escalated);
    let timeline = store.timeline(id).await.unwrap();
    let esc = timeline.iter().find(|e| e.kind == "escalated").unwrap();
    assert_eq!(esc.at, t0() + chrono::Duration::minutes(121));
    assert_eq!(esc.detail["rule"], "deadline");
    let rpo = &esc.detail["rpo"];
    assert_eq!(rpo["rpo_impact_seconds"], (25 * 3600 + 121 * 60) as i64);
    assert_eq!(rpo["rpo_target_hours"], 24);
    assert_eq!(rpo["rpo_breached"], true);
    let reason = esc.detail["reason"].as_str().unwrap();
    assert!(
        reason.contains("2 h after the incident opened") && reason.contains("27 h 1 min"),
        "{reason}"
    );
    let other = store.get_incident(fixed).await.unwrap().unwrap();
    assert_eq!(other.status, IncidentStatus::Remediated, "not re-escalated");
    let other = store.get_incident(restore_test).await.unwrap().unwrap();
    assert_eq!(
        other.status,
        IncidentStatus::Open,
        "the deadline is the backup alert's"
    );
}

#[tokio::test]
async fn an_incoming_webhook_gets_a_new_message_only_for_major_changes() {
    let parties = ThirdParties::start().await;
    let Rig {
        _db,
        store,
        clock: _,
        notifier,
    } = rig(&parties.config(false, false)).await;
    let id = open(&store, t0()).await;
    diagnose(&store, id, t0()).await;
    notifier.tick().await;
    plan_with_approval(&store, id, t0()).await;
    notifier.tick().await;
    escalate(&store, id, t0(), "x").await;
    notifier.tick().await;

    let hooks = parties.to("/hook/");
    assert_eq!(hooks.len(), 2, "diagnosed, escalated: {hooks:?}");
    assert!(header(&hooks[0].body).contains("Diagnosed"));
    assert!(header(&hooks[1].body).contains("Escalated"));
    assert!(hooks.iter().all(|h| h.body.get("channel").is_none()));
}

/// Captures log lines written while the guard lives (this thread's default subscriber).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's log lines (a `#[tokio::test]` runs every task on it) at debug level.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn no_secret_appears_in_any_request_body_log_line_or_failure_record() {
    // Arrange: logs captured at debug; Slack webhook and PagerDuty fail once each.
    let (logs, _guard) = capture_logs();
    let parties = ThirdParties::start().await;
    parties.fail("/hook", vec![(500, None, json!({}))]);
    parties.fail(
        "/pd",
        vec![(400, None, json!({ "status": "invalid event" }))],
    );
    let (_db, store) = fresh_store(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::new(t0()));
    let mut toml = parties.config(false, true);
    toml.push_str(&format!(
        "[auth]\napi_token = \"{API}\"\n",
        API = "canary-api-token-5b2a"
    ));
    let notifier = Notifier::new(store.clone(), &settings(&toml), clock.clone());
    let id = open(&store, t0()).await;
    diagnose(&store, id, t0()).await;
    // A careless reason quoting a secret is scrubbed before it leaves.
    escalate(
        &store,
        id,
        t0(),
        format!("login failed for postgres://backup:{DB_PASSWORD}@db"),
    )
    .await;

    // Act
    for _ in 0..3 {
        notifier.tick().await;
        clock.advance(chrono::Duration::minutes(5));
    }

    // Assert
    let reqs = parties.requests();
    assert!(reqs.iter().any(|r| r.path.starts_with("/hook/")));
    assert!(reqs.iter().any(|r| r.path.starts_with("/pd/")));
    for r in &reqs {
        let mut body = r.body.clone();
        if r.path.starts_with("/pd/") {
            assert_eq!(body["routing_key"], ROUTING_KEY);
            body.as_object_mut().unwrap().remove("routing_key");
        }
        let text = body.to_string();
        for canary in [
            SLACK_TOKEN,
            ROUTING_KEY,
            HOOK_SECRET,
            DB_PASSWORD,
            "canary-api-token",
        ] {
            assert!(!text.contains(canary), "{canary} in {}: {text}", r.path);
        }
    }
    assert!(reqs.iter().any(|r| r
        .raw
        .contains("login failed for postgres://backup:[redacted]@db")
        || r.raw.contains("[redacted]")));
    let logged = logs.text();
    assert!(logged.contains("notification failed"), "{logged}");
    let timeline = serde_json::to_string(&store.timeline(id).await.unwrap()).unwrap();
    let deliveries = serde_json::to_string(&store.deliveries(id).await.unwrap()).unwrap();
    for canary in [SLACK_TOKEN, ROUTING_KEY, HOOK_SECRET] {
        assert!(!logged.contains(canary), "{canary} logged: {logged}");
        assert!(!timeline.contains(canary), "{canary} on the timeline");
        assert!(!deliveries.contains(canary), "{canary} in the outbox");
    }
    assert!(!logged.contains(DB_PASSWORD));
    // A PagerDuty 400 is not retried; it is recorded as given up.
    let pd = store
        .deliveries(id)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.channel == "pagerduty")
        .unwrap();
    assert_eq!(pd.state, "failed");
    assert_eq!(parties.to("/pd/").len(), 1);
}

#[tokio::test]
async fn the_running_service_notifies_and_counts_it_in_metrics_on_postgres() {
    // Arrange: the real application (its notifier task) over a fresh PostgreSQL database.
    let parties = ThirdParties::start().await;
    let mut app = spawn_app_with(Backend::Postgres, &parties.config(true, true)).await;
    let id = open(&app.store, Utc::now()).await;
    diagnose(&app.store, id, Utc::now()).await;
    escalate(&app.store, id, Utc::now(), "no safe fix").await;

    // Act: wait for the notifier's polls.
    let both = eventually(Duration::from_secs(10), || async {
        !parties.to("/slack/api/chat.postMessage").is_empty() && !parties.to("/pd/").is_empty()
    })
    .await;
    assert!(both, "{:?}", parties.paths());

    // Assert
    let posts = parties.to("/slack/api/chat.postMessage");
    assert_eq!(posts.len(), 1, "{:?}", parties.paths());
    assert_eq!(parties.to("/pd/").len(), 1, "{:?}", parties.paths());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .contains(r#"backup_remediator_notifications_total{channel="slack",outcome="sent"}"#),
        "{metrics}"
    );
    let incident = app.incident(id).await.to_string();
    assert!(incident.contains("notification_sent"));
    for canary in [SLACK_TOKEN, ROUTING_KEY] {
        assert!(!incident.contains(canary), "{canary} in the API answer");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_fixed_and_verified_incident_updates_its_message_to_remediated_and_pages_nobody() {
    // Arrange
    let parties = ThirdParties::start().await;
    let Rig {
        _db,
        store,
        clock,
        notifier,
    } = rig(&parties.config(true, true)).await;
    let id = open(&store, t0()).await;
    diagnose(&store, id, t0()).await;
    notifier.tick().await;
    let at = t0() + chrono::Duration::minutes(5);
    let step = |kind, name: &str| PlannedStep {
        group: 1,
        kind,
        name: name.parse().unwrap(),
        target: "pvc/link-services/postgres-data-postgres-primary-0".into(),
        decision: Decision::Auto,
        reason: "the runbook".into(),
    };
    store
        .save_plan(
            id,
            &[
                step(StepKind::Action, "expand_pvc"),
                step(StepKind::Verify, "verify_backup"),
            ],
            &json!({}),
            at,
        )
        .await
        .unwrap();

    // Act: each step runs and succeeds, with a poll after each change.
    for s in store.steps(id).await.unwrap() {
        run_step(&store, s.id, at).await;
        clock.advance(chrono::Duration::minutes(1));
        notifier.tick().await;
    }
    store
        .settle(
            id,
            IncidentStatus::Remediated,
            at,
            &json!({ "verified_by_step": 2 }),
        )
        .await
        .unwrap();
    notifier.tick().await;
    clear_alert(&store, id, at).await;
    notifier.tick().await;

    // Assert: one message, updated through the fix; no page for an incident never escalated.
    assert_eq!(
        parties.paths(),
        [
            "/slack/api/chat.postMessage",
            "/slack/api/chat.update",
            "/slack/api/chat.update",
            "/slack/api/chat.update",
            "/slack/api/chat.update",
        ]
    );
    let last = parties.requests().last().unwrap().clone();
    assert!(
        header(&last.body).contains("Remediated"),
        "{}",
        header(&last.body)
    );
    assert!(last.raw.contains("action `expand_pvc`"), "{}", last.raw);
    assert!(last.raw.contains("verify `verify_backup`"), "{}", last.raw);
    assert!(!last.raw.contains("Needs a person"), "{}", last.raw);
    let timeline = kinds(&store.timeline(id).await.unwrap());
    let sent = timeline
        .iter()
        .filter(|k| *k == "notification_sent")
        .count();
    assert_eq!(sent, 5);
    assert_eq!(timeline.last().unwrap(), "notification_sent");
}

#[tokio::test]
async fn the_backup_secret_and_the_tokens_never_reach_slack_pagerduty_the_logs_or_the_api() {
    // Arrange: logs captured; a backup Secret full of canaries for a role that does not exist
    // (the real `secret` and `database` probes read it and log in with it); Slack and PagerDuty.
    let (logs, _guard) = capture_logs();
    const PG_PASSWORD: &str = "canary-secret-pg-password-6d0f";
    const ENC_KEY: &str = "canary-secret-encryption-key-0123456789abcdef";
    const AWS_SECRET: &str = "canary-secret-aws-key-a1b2c3";
    let ns = crate::support::cluster::shared().await.namespace().await;
    ns.put(crate::support::cluster::fixtures::secret(&[
        ("postgres-user", "backup_canary_role"),
        ("postgres-password", PG_PASSWORD),
        ("s3-bucket", "backups"),
        ("encryption-key", ENC_KEY),
        ("aws-access-key-id", "AKIACANARY"),
        ("aws-secret-access-key", AWS_SECRET),
    ]))
    .await;
    let parties = ThirdParties::start().await;
    let toml = format!(
        "{notify}\n[probes]\nenabled = [\"secret\", \"database\"]\n\
         [kubernetes]\n{kube}\
         [target]\nhost = \"127.0.0.1\"\nport = 5432\ndatabases = [\"postgres\"]\n\
         [remediation]\nenabled = false\n\
         [[targets]]\nname = \"link-services\"\nmatch = {{ namespace = \"link-services\" }}\n",
        notify = parties.config(true, true),
        kube = ns.kubernetes_toml(),
    );
    let mut app = spawn_app_with(Backend::Sqlite, &toml).await;

    // Act: the alert arrives, is diagnosed and announced; then it is escalated and paged.
    let resp = app
        .post_webhook(&payload(vec![backup_failed("0a1b2c3d4e5f6071")]))
        .await;
    assert_eq!(resp.status(), 202);
    let posted = eventually(Duration::from_secs(15), || async {
        !parties.to("/slack/api/chat.postMessage").is_empty()
    })
    .await;
    assert!(
        posted,
        "no Slack message; requests: {:?}",
        parties.requests()
    );
    let id = app.incidents().await[0]["id"].as_i64().unwrap();
    escalate(&app.store, id, Utc::now(), "test").await;
    let paged = eventually(Duration::from_secs(10), || async {
        !parties.to("/pd/").is_empty()
    })
    .await;
    assert!(paged);
    let api = app.incident(id).await.to_string();
    app.stop().await;

    // Assert
    assert!(
        api.contains("backup_canary_role"),
        "the diagnosis saw the Secret: {api}"
    );
    let logged = logs.text();
    assert!(logged.contains("notification sent"), "logs were captured");
    let secrets = [PG_PASSWORD, ENC_KEY, AWS_SECRET, SLACK_TOKEN, ROUTING_KEY];
    for r in parties.requests() {
        let mut body = r.body.clone();
        if r.path.starts_with("/pd/") {
            body.as_object_mut().unwrap().remove("routing_key");
        }
        let text = body.to_string();
        for canary in secrets {
            assert!(!text.contains(canary), "{canary} sent to {}", r.path);
        }
    }
    for canary in secrets {
        assert!(!logged.contains(canary), "{canary} logged");
        assert!(!api.contains(canary), "{canary} in the API answer");
    }
}

#[tokio::test]
async fn a_hanging_slack_does_not_hold_up_the_service_stopping() {
    // Arrange: Slack takes a minute to answer; requests may take 20 s.
    let parties = ThirdParties::start().await;
    parties.world.lock().unwrap().delay = Duration::from_secs(60);
    let toml = parties
        .config(true, false)
        .replace("request_timeout_ms = 2000", "request_timeout_ms = 20000");
    let app = spawn_app_with(Backend::Sqlite, &toml).await;
    let id = open(&app.store, Utc::now()).await;
    diagnose(&app.store, id, Utc::now()).await;
    let queued = eventually(Duration::from_secs(5), || async {
        !app.store.deliveries(id).await.unwrap().is_empty()
    })
    .await;
    assert!(queued);
    tokio::time::sleep(Duration::from_millis(300)).await; // the post is in flight

    // Act
    let started = std::time::Instant::now();
    let db = app.stop_keep_db().await;

    // Assert: stopped without waiting for Slack; the delivery is still pending in the store.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(parties.requests().is_empty(), "Slack never answered");
    let pending = connect(&db).await.deliveries(id).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, "pending");
}
