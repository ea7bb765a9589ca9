//! One root cause, one incident, one page — end to end: the real PostgreSQL, Prometheus and
//! moto, the stand-in Kubernetes API, the service in this process, and the Slack/PagerDuty
//! stand-in of `notify` counting every PagerDuty trigger it receives.

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::store::{Store, StoreOptions};
use backup_remediator::workflow::notify::{ManualClock, Notifier};
use backup_remediator::workflow::watchdog;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::notify::ThirdParties;
use crate::support::world;
use world::*;

const RESET_LOG: &str = "Starting backup of link_users\npg_dump: error: could not receive data from server: Connection reset by peer\n";
const NO_BUCKET_LOG: &str = "Starting backup of link_users\nEncrypting backup\nupload failed: An error occurred (NoSuchBucket) when calling the PutObject operation: The specified bucket does not exist\n";

/// The PagerDuty events the stand-in received with `event_action` = `action`.
fn pagerduty(parties: &ThirdParties, action: &str) -> Vec<Value> {
    parties
        .to("/pd/")
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["event_action"] == action)
        .collect()
}

/// Waits (bounded, 30 s) until the stand-in received `n` PagerDuty events `action`.
async fn wait_for_pages(parties: &ThirdParties, action: &str, n: usize) {
    for _ in 0..300 {
        if pagerduty(parties, action).len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no {n} PagerDuty {action} event(s) within 30 s: {:?}",
        pagerduty(parties, action)
    );
}

/// The `escalated` events of an incident as the API serves it.
fn escalations(incident: &Value) -> Vec<Value> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "escalated")
        .map(|e| e["detail"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watchdog_on_a_missing_backup_role_is_one_incident_and_one_page() {
    let parties = ThirdParties::start().await;
    let notify = parties.config(true, true);
    let role = format!(
        "bk_gone_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let log = format!("{FAILED_DUMP}{ROLE_GONE_LOG}");
    let w = World::builder()
        .backup_role_gone(&role)
        .job_failed_with_logs(&log)
        .remediation(&notify)
        .build()
        .await;
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    w.wait_for(id, "an escalation", |i| i["status"] == "escalated")
        .await;
    wait_for_pages(&parties, "trigger", 1).await;

    // The watchdog finds the backups stale (the second database has none) while the alert's
    // incident is escalated: its evidence goes there.
    let period = watchdog::period_of(chrono::Utc::now(), Duration::from_secs(900));
    let report = w
        .watchdog
        .clone()
        .unwrap()
        .check_period(period)
        .await
        .unwrap()
        .expect("the period is ours");
    assert!(
        report.verdicts.iter().any(|v| !v.reasons.is_empty()),
        "the watchdog must find something for this test to mean anything: {report:?}"
    );
    assert!(
        report.opened.is_empty(),
        "a second incident for one root cause: {report:?}"
    );
    let incident = w.incident(id).await;
    let evidence: Vec<&Value> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "watchdog_found")
        .collect();
    assert!(
        !evidence.is_empty(),
        "the watchdog's evidence is on the alert's incident"
    );
    assert!(
        evidence[0]["detail"]["database"].is_string(),
        "{evidence:?}"
    );
    assert_eq!(w.incidents().await.len(), 1);

    // Every incident the service holds reaches its outcome, and its notifications go out.
    for i in w.incidents().await {
        let id = i["id"].as_i64().unwrap();
        w.wait_for(id, "an outcome", |i| i["status"] != "open")
            .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pagerduty(&parties, "trigger").len(),
        1,
        "PagerDuty triggers: {:?}",
        pagerduty(&parties, "trigger")
    );
}

/// A notifier on the world's store whose clock is `hours` ahead (the deadline has passed).
async fn notifier_after(w: &World, hours: i64) -> Notifier {
    let store = Store::connect(
        w.settings.database.url.expose_secret(),
        std::path::Path::new(""),
        &StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    let clock = ManualClock::new(chrono::Utc::now() + chrono::Duration::hours(hours));
    Notifier::new(store, &w.settings, Arc::new(clock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_pages_what_is_still_running_and_a_fix_proven_after_it_resolves_the_page() {
    let parties = ThirdParties::start().await;
    let notify = parties.config(true, true);
    let w = World::builder()
        .job_failed_with_logs(RESET_LOG)
        .policy(LIVE)
        .remediation(&notify)
        .build()
        .await;
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;
    w.wait_for(id, "the verification running", |i| {
        step(i, "verify_backup")["state"] == "running"
    })
    .await;

    // The runbook's deadline passes while the verification Job still runs.
    assert_eq!(
        notifier_after(&w, 3)
            .await
            .escalate_overdue()
            .await
            .unwrap(),
        1
    );
    let escalated = w
        .wait_for(id, "the deadline's escalation", |i| {
            i["status"] == "escalated"
        })
        .await;
    let detail = escalations(&escalated).pop().unwrap();
    assert_eq!(detail["rule"], "deadline", "{detail:#}");
    let running = detail["still_running"].as_array().expect("still_running");
    assert_eq!(running.len(), 1, "{detail:#}");
    assert_eq!(running[0]["name"], "verify_backup", "{detail:#}");
    assert!(
        detail["reason"]
            .as_str()
            .unwrap()
            .contains("still running: verify_backup"),
        "{detail:#}"
    );
    assert!(detail["rpo"]["rpo_breached"].is_boolean(), "{detail:#}");
    wait_for_pages(&parties, "trigger", 1).await;
    let page = &pagerduty(&parties, "trigger")[0];
    assert!(
        page["payload"]["custom_details"]["escalation"]
            .as_str()
            .unwrap()
            .contains("still running: verify_backup"),
        "{page:#}"
    );

    // The running verification then proves the fix.
    // What the verification Job uploads: a real encrypted pg_dump per database (made as the
    // superuser: this machine's PostgreSQL asks the backup role for a password).
    w.upload_new_backups(|_| crate::support::backup::real_backup(w.dir.path(), KEY))
        .await;
    w.kube.finish_job(&jobs[0], true);
    let done = w
        .wait_for(id, "the fix proven", |i| i["status"] != "escalated")
        .await;
    assert_eq!(done["status"], "remediated", "{:?}", states(&done));
    wait_for_pages(&parties, "resolve", 1).await;
    assert_eq!(pagerduty(&parties, "trigger").len(), 1);
    let updates = parties.to("/slack/api/chat.update");
    assert!(
        updates
            .iter()
            .any(|r| r.body.to_string().to_lowercase().contains("remediated")),
        "Slack's message says remediated"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.kube.created_jobs(),
        jobs,
        "nothing more was started after the page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flapping_breaker_pages_once_per_window() {
    let parties = ThirdParties::start().await;
    let notify = parties.config(true, true);
    let policy = format!("{LIVE}[flapping]\nincidents = 1\nwindow_minutes = 360\n");
    let w = World::builder()
        .bucket_gone()
        .job_failed_with_logs(NO_BUCKET_LOG)
        .policy(&policy)
        .remediation(&notify)
        .build()
        .await;

    // The first incident escalates on its own (scenario 4 is people's); the next two trip the
    // breaker.
    let mut ids = Vec::new();
    for starts_at in [
        "2026-11-24T02:30:00Z",
        "2026-11-24T03:30:00Z",
        "2026-11-24T04:30:00Z",
    ] {
        let id = w.alert(&w.base, starts_at).await;
        w.wait_for(id, "an escalation", |i| i["status"] == "escalated")
            .await;
        ids.push(id);
    }
    wait_for_pages(&parties, "trigger", 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let breaker = |i: &Value| {
        i["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "flapping_breaker")
    };
    let second = w.incident(ids[1]).await;
    let third = w.incident(ids[2]).await;
    assert!(breaker(&second) && breaker(&third));
    let paged: Vec<String> = pagerduty(&parties, "trigger")
        .iter()
        .map(|p| p["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paged,
        [
            format!("backup-remediator-{}-{}", w.kube.namespace(), ids[0]),
            format!("backup-remediator-{}-{}", w.kube.namespace(), ids[1])
        ],
        "the breaker pages once per window"
    );
    let third_escalation = escalations(&third).pop().unwrap();
    assert_eq!(third_escalation["rule"], "breaker", "{third_escalation:#}");
    assert_eq!(third_escalation["page"], false, "{third_escalation:#}");
    assert_eq!(
        third_escalation["paged_with"], ids[1],
        "{third_escalation:#}"
    );
}
