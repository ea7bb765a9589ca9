//! Kill points on the resume path, with the real binary: a process is SIGKILLed in the middle of
//! an approved restart of the primary (its patch reached the API server, the answer did not come
//! back); the operator changes the policy before the next process starts. The step left
//! `running` passes the whole gate again under the policy in force now: it is not redone, it
//! ends `interrupted` with the reason, and the incident is escalated once.

use std::time::Duration;

use serde_json::Value;

use crate::support::world;
use world::*;

const CONNECTION_LOG: &str = "Starting backup of link_users\npg_dump: error: connection to server failed: Connection refused\n";
const STS: &str = "/statefulsets/postgres-primary";

/// Kills the service while the approved restart's patch waits for its answer, rewrites the
/// policy to `policy`, starts another binary and waits for the incident to close.
async fn restart_killed_then_policy_changed(policy: &str) -> (World, Value) {
    let mut w = World::builder()
        .database_down()
        .job_failed_with_logs(CONNECTION_LOG)
        .policy(LIVE)
        .processes(1)
        .remediation("lease_seconds = 3")
        .build()
        .await;
    let sts_path = &format!(
        "/apis/apps/v1/namespaces/{}/statefulsets/postgres-primary",
        w.kube.namespace()
    );
    w.kube
        .delay_answer("PATCH", sts_path, Duration::from_secs(60));
    let (id, restart) = w.restart_waiting_for_approval().await;
    assert_eq!(w.approve(id, restart, "approve", ADMIN).await.status(), 200);
    for _ in 0..300 {
        if !patches(&w, STS).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(patches(&w, STS).len(), 1, "the approved restart patched");
    let mut first = w.processes.remove(0);
    first.child.kill().unwrap(); // SIGKILL: the step stays `running`
    first.child.wait().unwrap();

    w.kube.clear_delays();
    w.rewrite_policy(policy);
    w.base = w.start_process().await;
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;
    // Give a wrong second patch time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    (w, incident)
}

fn assert_interrupted_and_escalated_once(w: &World, incident: &Value, because: &str) {
    assert_eq!(
        patches(w, STS).len(),
        1,
        "no second patch reached the API server: {:?}",
        states(incident)
    );
    let restart = step(incident, "restart_primary");
    assert_eq!(restart["state"], "interrupted", "{restart:#}");
    let reason = restart["reason"].as_str().unwrap();
    assert!(reason.contains(because), "{reason}");
    let kinds = timeline_kinds(incident);
    assert!(!kinds.contains(&"step_resumed".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"step_interrupted".to_owned()), "{kinds:?}");
    assert_eq!(incident["status"], "escalated", "{:?}", states(incident));
    assert_eq!(
        kinds.iter().filter(|k| *k == "escalated").count(),
        1,
        "escalated once: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_interrupted_by_a_kill_is_not_redone_after_the_policy_says_never() {
    let never = "dry_run = false\n[actions.restart_primary]\nmode = \"never\"\nbudget = 1\nbudget_window_minutes = 60\n";

    let (w, incident) = restart_killed_then_policy_changed(never).await;

    assert_interrupted_and_escalated_once(&w, &incident, "never run by the service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_interrupted_by_a_kill_is_not_redone_after_the_policy_turns_to_dry_run() {
    let (w, incident) = restart_killed_then_policy_changed("dry_run = true\n").await;

    assert_interrupted_and_escalated_once(&w, &incident, "dry run");
}
