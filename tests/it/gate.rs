//! The action gate, end to end: a change happens only if it is still allowed at the moment it
//! happens. The same world as `scenarios` (real PostgreSQL, Prometheus and moto, the stand-in
//! Kubernetes API); the service runs as binaries, in this process, or — to set two remediators
//! on one incident — as the library driven by the test.

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::domain::policy::Policy;
use backup_remediator::store::{Store, StoreOptions};
use backup_remediator::workflow::engine::{Engine, Examiner};
use backup_remediator::workflow::remediation::Remediator;
use serde_json::Value;

use crate::support::incident::new_incident;
use crate::support::world;
use world::*;

const CONNECTION_LOG: &str = "Starting backup of link_users\npg_dump: error: connection to server failed: Connection refused\n";
const RESET_LOG: &str = "Starting backup of link_users\npg_dump: error: could not receive data from server: Connection reset by peer\n";

fn is_final(state: &Value) -> bool {
    !["planned", "running", "waiting_approval", "approved"].contains(&state.as_str().unwrap())
}

/// (i) The plan was made under a live policy; the operator removes the policy file to freeze
/// the service and restarts it; a person then approves the waiting restart: the policy in
/// force now is a dry run, so nothing reaches the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_given_after_the_policy_file_was_removed_patches_nothing() {
    let mut w = World::builder()
        .database_down()
        .job_failed_with_logs(CONNECTION_LOG)
        .policy(LIVE)
        .processes(1)
        .remediation("lease_seconds = 6")
        .build()
        .await;
    let (id, restart) = w.restart_waiting_for_approval().await;
    let mut first = w.processes.remove(0);
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();

    w.remove_policy_file();
    w.base = w.start_process().await;
    assert_eq!(w.approve(id, restart, "approve", ADMIN).await.status(), 200);
    let incident = w
        .wait_for(id, "the restart step to end", |i| {
            is_final(&step(i, "restart_primary")["state"])
        })
        .await;

    assert!(
        patches(&w, "/statefulsets/postgres-primary").is_empty(),
        "the StatefulSet was patched under a dry-run policy: {:?}",
        states(&incident)
    );
    let s = step(&incident, "restart_primary");
    assert_eq!(s["state"], "dry_run", "{s:#}");

    // Once decided, or once the incident is closed, an approval is a conflict with a reason.
    let again = w.approve(id, restart, "approve", ADMIN).await;
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    let why = body["error"].as_str().unwrap();
    assert!(
        why.contains("not waiting") || why.contains("not open"),
        "{why}"
    );
    let closed = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(closed["status"], "escalated", "{:?}", states(&closed));
    let late = w.approve(id, restart, "reject", ADMIN).await;
    assert_eq!(late.status(), 409);
    let body: Value = late.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not open"),
        "{body}"
    );
}

/// (ii) Incident B's verification waits for the CronJob's lock, held by A's running Job; B's
/// alert resolves; A's Job finishes: one Job was ever created and B's step says why it did not
/// run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_waiting_for_another_incidents_job_is_skipped_when_its_alert_resolves() {
    let w = World::builder()
        .job_failed_with_logs(RESET_LOG)
        .policy(LIVE)
        .build()
        .await;
    let a = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;
    let b = w.alert(&w.base, T2).await;
    w.wait_for(b, "B's plan", |i| {
        timeline_kinds(i).contains(&"planned".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.resolve(&w.base, T2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    w.run_backup_as(&w.pg.role, KEY).await;
    w.kube.finish_job(&jobs[0], true);
    let first = w
        .wait_for(a, "A's outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(first["status"], "remediated", "{:?}", states(&first));
    let second = w
        .wait_for(b, "B's verification to end", |i| {
            is_final(&step(i, "verify_backup")["state"])
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(
        w.kube.created_jobs(),
        jobs,
        "exactly one backup Job was created"
    );
    let verify = step(&second, "verify_backup");
    assert_eq!(verify["state"], "skipped", "{verify:#}");
    assert!(
        verify["reason"]
            .as_str()
            .unwrap()
            .contains("Alertmanager resolved the alert"),
        "{verify}"
    );
}

/// (iii) Two remediators with different holders work one incident (the first one's lease
/// lapsed while the PVC read hung for 2 s): each step starts once, one Job, remediated, no page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_remediators_on_one_incident_start_each_step_once_and_do_not_escalate() {
    let w = World::builder()
        .volume_full()
        .job_failed_with_logs(&format!("{FAILED_DUMP}{DISK_FULL_LOG}"))
        .no_service()
        .build()
        .await;
    let settings = Arc::new(w.settings.clone());
    let url = secrecy::ExposeSecret::expose_secret(&w.settings.database.url).to_owned();
    let store = Store::connect(
        &url,
        std::path::Path::new("unused.sqlite"),
        &StoreOptions {
            max_connections: 5,
            acquire_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let now = chrono::Utc::now();
    let id = new_incident()
        .fingerprint("5c0e2a1b9d8f7e61")
        .target(Some(w.kube.namespace()))
        .at(now)
        .open(&store)
        .await;
    let kube = Some(w.kube.client().await);
    let engine = Engine::new(store.clone(), Examiner::new(settings.clone(), kube.clone()));
    engine.diagnose(id).await.unwrap().expect("diagnosed");

    let policy = Arc::new(Policy::from_toml(LIVE).unwrap());
    let remediator = |holder: &str| {
        Arc::new(Remediator::new(
            store.clone(),
            settings.clone(),
            policy.clone(),
            kube.clone(),
            holder.to_owned(),
        ))
    };
    let (ra, rb) = (remediator("replica-a"), remediator("replica-b"));
    w.kube.delay(
        &format!(
            "/api/v1/namespaces/{}/persistentvolumeclaims/{PVC}",
            w.kube.namespace()
        ),
        Duration::from_secs(2),
    );
    let a = gate_support::work(&store, ra, "replica-a", id, 1).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let b = gate_support::work(&store, rb, "replica-b", id, 60).await;

    let jobs = w.wait_for_jobs(1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    w.run_backup_as(&w.pg.role, KEY).await;
    w.kube.finish_job(&jobs[0], true);
    let _ = tokio::time::timeout(Duration::from_secs(90), a).await;
    let _ = tokio::time::timeout(Duration::from_secs(90), b).await;

    let incident = store.get_incident(id).await.unwrap().unwrap();
    let timeline = store.timeline(id).await.unwrap();
    let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
    let steps = store.steps(id).await.unwrap();
    let shown: Vec<(String, String)> = steps
        .iter()
        .map(|s| (s.name.to_string(), s.state.to_string()))
        .collect();
    assert_eq!(
        incident.status.as_str(),
        "remediated",
        "{shown:?} {kinds:?}"
    );
    let started: Vec<i64> = timeline
        .iter()
        .filter(|e| e.kind == "step_started")
        .map(|e| e.detail["step"].as_i64().unwrap())
        .collect();
    let mut unique = started.clone();
    unique.dedup();
    assert_eq!(started.len(), 2, "expand and verify, once each: {kinds:?}");
    assert_eq!(unique.len(), started.len(), "{started:?}");
    assert_eq!(w.kube.created_jobs().len(), 1);
    assert!(!kinds.contains(&"escalated"), "nobody was paged: {kinds:?}");
}

/// (iv) An alert that flaps (fires, fails, fires again) ten times: at most the hourly budget of
/// backup Jobs, and after N incidents the breaker escalates without acting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_alert_is_held_to_the_budget_and_then_escalated_without_action() {
    let w = World::builder()
        .job_failed_with_logs(RESET_LOG)
        .policy(LIVE)
        .build()
        .await;
    // The backup fails again at once, every time.
    let done = std::sync::atomic::AtomicBool::new(false);
    let failer = async {
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            for job in w.kube.created_jobs() {
                w.kube.finish_job(&job, false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let flapping = async {
        let mut incidents = Vec::new();
        for n in 0..10 {
            let starts = format!("2026-11-24T{:02}:30:00Z", 2 + n);
            let id = w.alert(&w.base, &starts).await;
            incidents.push(
                w.wait_for(id, "an outcome", |i| i["status"] != "open")
                    .await,
            );
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        incidents
    };
    let ((), incidents) = tokio::join!(failer, flapping);

    let jobs = w.kube.created_jobs();
    assert!(jobs.len() <= 4, "rerun_backup budget is 4/h: {jobs:?}");
    for (n, incident) in incidents.iter().enumerate().skip(3) {
        assert_eq!(incident["status"], "escalated");
        let started = timeline_kinds(incident)
            .iter()
            .filter(|k| *k == "step_started")
            .count();
        assert_eq!(started, 0, "incident {n} acted: {:?}", states(incident));
        let escalated = incident["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "escalated")
            .unwrap();
        assert!(
            escalated["detail"]["reason"]
                .as_str()
                .unwrap()
                .contains("flapping"),
            "{escalated}"
        );
    }
}

/// (vi) The Job's log says "No space left on device" but the data volume is 40 % full now:
/// the expansion is refused with the measured usage and nothing is patched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expansion_planned_from_a_log_line_is_refused_while_the_volume_is_below_threshold() {
    let w = World::builder()
        .job_failed_with_logs(&format!("{FAILED_DUMP}{DISK_FULL_LOG}"))
        .policy(LIVE)
        .build()
        .await;
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let incident = w
        .wait_for(id, "the expansion step to end", |i| {
            i["actions"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|s| s["name"] == "expand_pvc" && is_final(&s["state"]))
            })
        })
        .await;

    assert!(
        patches(&w, &format!("/persistentvolumeclaims/{PVC}")).is_empty(),
        "the volume was expanded: {:?}",
        states(&incident)
    );
    let expand = step(&incident, "expand_pvc");
    assert_eq!(expand["state"], "refused", "{expand:#}");
    assert!(
        expand["reason"].as_str().unwrap().contains("40% full"),
        "{expand}"
    );
}

/// (v) Kill points: right after the expansion's intent was stored (its PVC read hangs), and
/// right after its patch reached the API server (the answer hangs). Each restart resumes the
/// step from its intent: the volume is patched once, each step starts once, one Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_after_storing_the_intent_and_after_the_patch_does_nothing_twice() {
    let mut w = World::builder()
        .volume_full()
        .job_failed_with_logs(&format!("{FAILED_DUMP}{DISK_FULL_LOG}"))
        .policy(LIVE)
        .processes(1)
        .remediation("lease_seconds = 3")
        .build()
        .await;
    let pvc_path = format!(
        "/api/v1/namespaces/{}/persistentvolumeclaims/{PVC}",
        w.kube.namespace()
    );
    // Kill point 1: the intent is stored (step running) and apply's read of the PVC hangs (every
    // read of it takes 4 s: the disk probe, the re-probe and prepare before the gate, apply after
    // it). Set before the alert: the plan runs at once after the diagnosis, so a delay set after
    // seeing `planned` can come too late. 4 s is within the probes' 10 s deadline.
    w.kube
        .delay_request("GET", &pvc_path, Duration::from_secs(4));
    let id = w.alert(&w.base.clone(), "2026-11-24T02:30:00Z").await;
    w.wait_for(id, "the plan", |i| {
        timeline_kinds(i).contains(&"planned".to_owned())
    })
    .await;
    w.wait_for(id, "the expansion to start", |i| {
        step(i, "expand_pvc")["state"] == "running"
    })
    .await;
    let mut first = w.processes.remove(0);
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    assert!(patches(&w, &pvc_path).is_empty(), "killed before the patch");

    // Kill point 2: the resumed step's patch is applied, its answer hangs.
    w.kube.clear_delays();
    w.kube
        .delay_answer("PATCH", &pvc_path, Duration::from_secs(30));
    w.base = w.start_process().await;
    for _ in 0..300 {
        if !patches(&w, &pvc_path).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(patches(&w, &pvc_path).len(), 1, "the resumed step patched");
    let mut second = w.processes.remove(0);
    second.child.kill().unwrap();
    second.child.wait().unwrap();

    w.kube.clear_delays();
    w.base = w.start_process().await;
    let jobs = w.wait_for_jobs(1).await;
    w.run_backup_as(&w.pg.role, KEY).await;
    w.kube.finish_job(&jobs[0], true);
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;

    assert_eq!(incident["status"], "remediated", "{:?}", states(&incident));
    assert_eq!(
        patches(&w, &pvc_path).len(),
        1,
        "the volume was patched once"
    );
    let expand = step(&incident, "expand_pvc");
    assert_eq!(
        expand["output"]["patched"], false,
        "the last resume found it done: {expand:#}"
    );
    assert_eq!(w.kube.created_jobs().len(), 1);
    let kinds = timeline_kinds(&incident);
    assert_eq!(
        kinds.iter().filter(|k| *k == "step_started").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "step_resumed").count(),
        2,
        "{kinds:?}"
    );
}

mod gate_support {
    use super::*;

    /// Claims the incident for `holder` for `lease_seconds` and works it with `r` in the
    /// background (no heartbeat: the lease lapses as a stalled replica's would).
    pub async fn work(
        store: &Store,
        r: Arc<Remediator>,
        holder: &str,
        id: i64,
        lease_seconds: u64,
    ) -> tokio::task::JoinHandle<()> {
        let claim = store
            .claim(id, holder, Duration::from_secs(lease_seconds))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the incident is free to claim by {holder}"));
        tokio::spawn(async move {
            let _ = r.remediate(id, &claim).await;
        })
    }
}
