//! The action gate's store operation and the claims it relies on, on both stores: every check
//! of the gate (claim epoch and lease by the database clock, incident open, policy verdict,
//! attempts, cooldown, budget, target lock) against a real PostgreSQL and a real SQLite file.

use std::time::Duration;

use backup_remediator::domain::incident::IncidentStatus;
use backup_remediator::domain::plan::{
    Claim, Decision, GateOutcome, GateRequest, PlannedStep, Refusal, Step, StepKind, StepState,
    Transition, Verdict,
};
use backup_remediator::store::Store;
use serde_json::json;

use crate::support::app::{fresh_store, Backend};
use crate::support::incident::new_incident;

on_both_stores!(
    a_new_claim_fences_the_old_one_and_the_lease_is_the_databases,
    the_gate_starts_a_step_once_and_records_the_start,
    the_gate_refuses_by_policy_attempts_cooldown_and_budget,
    the_gate_skips_a_step_of_a_closed_incident_and_waits_for_a_held_target,
    a_remediated_incident_skips_the_rest_of_its_plan_in_the_same_write,
    each_watchdog_period_is_taken_once_and_only_open_or_escalated_incidents_are_live,
    budgets_are_each_targets_own_and_the_fleet_cap_holds_across_targets,
);

/// Opens an incident of alert `alertname` (`fingerprint`, `starts_at`); its id.
async fn open_incident(
    store: &Store,
    fingerprint: &str,
    alertname: &str,
    starts_at: chrono::DateTime<chrono::Utc>,
) -> i64 {
    new_incident()
        .fingerprint(fingerprint)
        .alertname(alertname)
        .starts_at(starts_at)
        .labels(json!({}))
        .open(store)
        .await
}

/// An open incident with a plan of one `expand_pvc` step on `target`; (incident, step).
async fn incident_with_step(store: &Store, n: u32, target: &str) -> (i64, Step) {
    incident_of_target_with_step(store, n, "link-services", target).await
}

/// [`incident_with_step`] for an incident routed to the configured target `of`.
async fn incident_of_target_with_step(
    store: &Store,
    n: u32,
    of: &str,
    target: &str,
) -> (i64, Step) {
    let now = chrono::Utc::now();
    let id = new_incident()
        .fingerprint(&format!("fp{n}"))
        .starts_at(now - chrono::Duration::seconds(i64::from(n)))
        .labels(json!({}))
        .target(Some(of))
        .open(store)
        .await;
    let planned = PlannedStep {
        group: 1,
        kind: StepKind::Action,
        name: "expand_pvc".parse().unwrap(),
        target: target.into(),
        decision: Decision::Auto,
        reason: "grow".into(),
    };
    assert!(store
        .save_plan(id, &[planned], &json!({}), now)
        .await
        .unwrap());
    let step = store.steps(id).await.unwrap().remove(0);
    (id, step)
}

const READY: [StepState; 3] = [
    StepState::Planned,
    StepState::WaitingApproval,
    StepState::Approved,
];

/// A request with room everywhere, to be narrowed by each test.
fn request<'a>(step: &'a Step, claim: &'a Claim, detail: &'a serde_json::Value) -> GateRequest<'a> {
    GateRequest {
        step,
        claim,
        from: &READY,
        verdict: Verdict::Run,
        action: "expand_pvc".parse().unwrap(),
        counted: true,
        cooldown_seconds: 0,
        budget: (10, 3600),
        fleet_cap: 100,
        max_attempts: 3,
        lock_seconds: 600,
        intent: detail,
        detail,
        resume: false,
    }
}

async fn a_new_claim_fences_the_old_one_and_the_lease_is_the_databases(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let (id, step) = incident_with_step(&store, 1, "pvc/ns/a").await;
    let a = store
        .claim(id, "replica-a", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("unclaimed");
    assert_eq!(a.epoch, 1);
    assert!(
        store
            .claim(id, "replica-b", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "a live claim holds"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let b = store
        .claim(id, "replica-b", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the lease lapsed by the database's clock");
    assert_eq!(b.epoch, 2);
    assert!(!store
        .renew_claim(id, &a, Duration::from_secs(60))
        .await
        .unwrap());
    assert!(store
        .renew_claim(id, &b, Duration::from_secs(60))
        .await
        .unwrap());

    let detail = json!({ "to": "150Gi" });
    let lost = store.gate(&request(&step, &a, &detail)).await.unwrap();
    assert!(matches!(lost, GateOutcome::Lost(_)), "{lost:?}");
    assert_eq!(
        store.steps(id).await.unwrap()[0].state,
        StepState::Planned,
        "untouched"
    );
    let a_same_holder_with_the_old_epoch = Claim {
        holder: "replica-b".into(),
        epoch: 1,
    };
    let lost = store
        .gate(&request(&step, &a_same_holder_with_the_old_epoch, &detail))
        .await
        .unwrap();
    assert!(matches!(lost, GateOutcome::Lost(_)), "{lost:?}");
    assert_eq!(
        store.gate(&request(&step, &b, &detail)).await.unwrap(),
        GateOutcome::Started
    );
}

async fn the_gate_starts_a_step_once_and_records_the_start(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let (id, step) = incident_with_step(&store, 1, "pvc/ns/a").await;
    let claim = store
        .claim(id, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let intent = json!({ "to": "150Gi" });
    assert_eq!(
        store.gate(&request(&step, &claim, &intent)).await.unwrap(),
        GateOutcome::Started
    );
    let running = store.steps(id).await.unwrap().remove(0);
    assert_eq!(running.state, StepState::Running);
    assert_eq!(
        running.output, intent,
        "the intent is stored with the start"
    );
    assert!(running.started_at.is_some());
    let again = store.gate(&request(&step, &claim, &intent)).await.unwrap();
    assert!(
        matches!(again, GateOutcome::Lost(_)),
        "started once: {again:?}"
    );
    let kinds: Vec<String> = store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "step_started").count(), 1);
    // A resume by the claim's holder moves it from running, with its own event.
    let mut resume = request(&running, &claim, &intent);
    resume.from = &[StepState::Running];
    resume.resume = true;
    assert_eq!(store.gate(&resume).await.unwrap(), GateOutcome::Started);
}

fn refused(outcome: &GateOutcome) -> Option<Refusal> {
    match outcome {
        GateOutcome::Ended {
            state: StepState::Refused,
            refusal,
            ..
        } => *refusal,
        _ => None,
    }
}

async fn the_gate_refuses_by_policy_attempts_cooldown_and_budget(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let intent = json!({});
    // Policy in force now: never, and dry run.
    let (id, step) = incident_with_step(&store, 1, "pvc/ns/a").await;
    let claim = store
        .claim(id, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut r = request(&step, &claim, &intent);
    r.verdict = Verdict::Refuse(Refusal::Policy, "policy: never");
    assert_eq!(
        refused(&store.gate(&r).await.unwrap()),
        Some(Refusal::Policy)
    );
    let (id, step) = incident_with_step(&store, 2, "pvc/ns/a").await;
    let claim = store
        .claim(id, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut r = request(&step, &claim, &intent);
    r.verdict = Verdict::DryRun("dry run now");
    let out = store.gate(&r).await.unwrap();
    assert!(
        matches!(&out, GateOutcome::Ended { state: StepState::DryRun, reason, .. } if reason == "dry run now"),
        "{out:?}"
    );

    // One start on target a; the cooldown then refuses another incident on the same target.
    let (id, step) = incident_with_step(&store, 3, "pvc/ns/a").await;
    let claim = store
        .claim(id, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.gate(&request(&step, &claim, &intent)).await.unwrap(),
        GateOutcome::Started
    );
    store.unlock_target("pvc/ns/a", id, "r").await.unwrap();
    let (id, step) = incident_with_step(&store, 4, "pvc/ns/a").await;
    let claim = store
        .claim(id, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut r = request(&step, &claim, &intent);
    r.cooldown_seconds = 3600;
    let out = store.gate(&r).await.unwrap();
    assert_eq!(refused(&out), Some(Refusal::Cooldown), "{out:?}");

    // The budget counts starts of the action on every target: 1 start so far, budget 1.
    let (id, step) = incident_with_step(&store, 5, "pvc/ns/b").await;
    let claim = store
        .claim(id, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut r = request(&step, &claim, &intent);
    r.budget = (1, 3600);
    let out = store.gate(&r).await.unwrap();
    assert_eq!(refused(&out), Some(Refusal::Budget), "{out:?}");
    let timeline = store.timeline(id).await.unwrap();
    let event = timeline.iter().find(|e| e.kind == "step_refused").unwrap();
    assert_eq!(event.detail["refusal"], "budget");
    assert!(event.detail["reason"].as_str().unwrap().contains("budget"));

    // Attempts: this incident's own starts of the action.
    let (id, step) = incident_with_step(&store, 6, "pvc/ns/c").await;
    let claim = store
        .claim(id, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut r = request(&step, &claim, &intent);
    r.max_attempts = 0;
    assert_eq!(
        refused(&store.gate(&r).await.unwrap()),
        Some(Refusal::Attempts)
    );
}

async fn the_gate_skips_a_step_of_a_closed_incident_and_waits_for_a_held_target(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let intent = json!({});
    let (a, step_a) = incident_with_step(&store, 1, "cronjob/ns/backup").await;
    let claim_a = store
        .claim(a, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .gate(&request(&step_a, &claim_a, &intent))
            .await
            .unwrap(),
        GateOutcome::Started
    );
    let (b, step_b) = incident_with_step(&store, 2, "cronjob/ns/backup").await;
    let claim_b = store
        .claim(b, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let busy = store
        .gate(&request(&step_b, &claim_b, &intent))
        .await
        .unwrap();
    assert!(
        matches!(&busy, GateOutcome::Busy(why) if why.contains(&format!("incident {a}"))),
        "{busy:?}"
    );
    assert_eq!(store.steps(b).await.unwrap()[0].state, StepState::Planned);

    let fp = store.get_incident(b).await.unwrap().unwrap();
    store
        .resolve_by_alert(
            &fp.fingerprint,
            fp.starts_at,
            chrono::Utc::now(),
            &json!({}),
        )
        .await
        .unwrap();
    let out = store
        .gate(&request(&step_b, &claim_b, &intent))
        .await
        .unwrap();
    assert!(
        matches!(&out, GateOutcome::Ended { state: StepState::Skipped, reason, .. } if reason.contains("resolved")),
        "{out:?}"
    );
    assert_eq!(store.steps(b).await.unwrap()[0].state, StepState::Skipped);
}

/// Settling an incident as remediated skips the steps not yet started in the same transaction
/// (a reader never sees "remediated" beside a pending escalation), and only while the claim is
/// the settler's: a step the new claim holder owns is left to it.
async fn a_remediated_incident_skips_the_rest_of_its_plan_in_the_same_write(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let now = chrono::Utc::now();
    let step = |kind, name: &str| PlannedStep {
        group: 1,
        kind,
        name: name.parse().unwrap(),
        target: "t".into(),
        decision: Decision::Auto,
        reason: "r".into(),
    };
    let plan = [
        step(StepKind::Verify, "verify_backup"),
        step(StepKind::Escalate, "escalate"),
        step(StepKind::Escalate, "escalate"),
    ];
    let mut ids = Vec::new();
    for n in 1..=2 {
        let id = open_incident(&store, &format!("fp{n}"), "PostgreSQLBackupFailed", now).await;
        assert!(store.save_plan(id, &plan, &json!({}), now).await.unwrap());
        ids.push(id);
    }
    let (ours, lost) = (ids[0], ids[1]);
    let claim = store
        .claim(ours, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let verify = store.steps(ours).await.unwrap().remove(0);
    let tr = Transition {
        step_id: verify.id,
        from: &[StepState::Planned],
        to: StepState::Succeeded,
        reason: "",
        output: None,
        decided_by: None,
        at: now,
        event: "step_succeeded",
        fence: Some(&claim),
    };
    assert!(store.transition(&tr, &json!({})).await.unwrap());
    let settled = store
        .settle_skipping_rest(
            ours,
            IncidentStatus::Remediated,
            now,
            &json!({}),
            &claim,
            "the incident is remediated",
        )
        .await
        .unwrap();
    assert!(settled);
    let steps = store.steps(ours).await.unwrap();
    let states: Vec<_> = steps.iter().map(|s| (s.state, s.reason.as_str())).collect();
    assert_eq!(
        states,
        [
            (StepState::Succeeded, "r"),
            (StepState::Skipped, "the incident is remediated"),
            (StepState::Skipped, "the incident is remediated"),
        ]
    );
    let skipped: Vec<_> = store
        .timeline(ours)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "step_skipped")
        .map(|e| (e.detail["step"].as_i64().unwrap(), e.detail["name"].clone()))
        .collect();
    assert_eq!(
        skipped,
        [
            (steps[1].id, json!("escalate")),
            (steps[2].id, json!("escalate"))
        ]
    );

    // A settler whose claim was taken over (a newer epoch) settles the incident but leaves
    // the steps to the claim's new holder.
    let old = store
        .claim(lost, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let newer = store
        .claim(lost, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(newer.epoch > old.epoch);
    assert!(store
        .settle_skipping_rest(lost, IncidentStatus::Remediated, now, &json!({}), &old, "x")
        .await
        .unwrap());
    assert!(store
        .steps(lost)
        .await
        .unwrap()
        .iter()
        .all(|s| s.state == StepState::Planned));
}

/// The freshness watchdog's store side: two replicas claiming one period get it once; the live
/// incident of a fingerprint is its open or escalated one, never a resolved one.
async fn each_watchdog_period_is_taken_once_and_only_open_or_escalated_incidents_are_live(
    backend: Backend,
) {
    let (_db, store) = fresh_store(backend).await;
    let period: chrono::DateTime<chrono::Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
    let (a, b) = tokio::join!(
        store.claim_watchdog_period(period, "replica-a"),
        store.claim_watchdog_period(period, "replica-b")
    );
    assert_eq!(
        [a.unwrap(), b.unwrap()].iter().filter(|won| **won).count(),
        1,
        "exactly one replica checks the period"
    );
    assert!(!store
        .claim_watchdog_period(period, "replica-a")
        .await
        .unwrap());
    let next = period + chrono::Duration::minutes(15);
    assert!(store
        .claim_watchdog_period(next, "replica-b")
        .await
        .unwrap());
    store
        .finish_watchdog_period(period, &json!({ "opened": {} }))
        .await
        .unwrap();

    assert_eq!(store.live_incident("fp-watchdog").await.unwrap(), None);
    let now = chrono::Utc::now();
    let id = open_incident(&store, "fp-watchdog", "PostgreSQLBackupStale", period).await;
    assert_eq!(
        store.live_incident("fp-watchdog").await.unwrap(),
        Some((id, period))
    );
    store
        .settle(
            id,
            backup_remediator::domain::incident::IncidentStatus::Escalated,
            now,
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        store.live_incident("fp-watchdog").await.unwrap(),
        Some((id, period)),
        "an escalated incident is still live"
    );
    store
        .resolve_by_alert("fp-watchdog", period, now, &json!({}))
        .await
        .unwrap();
    assert_eq!(store.live_incident("fp-watchdog").await.unwrap(), None);
}

async fn budgets_are_each_targets_own_and_the_fleet_cap_holds_across_targets(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let intent = json!({});
    let start = |n: u32, of: &'static str, on: &'static str, budget: i64, cap: i64| {
        let store = store.clone();
        let intent = intent.clone();
        async move {
            let (id, step) = incident_of_target_with_step(&store, n, of, on).await;
            let claim = store
                .claim(id, "r", Duration::from_secs(60))
                .await
                .unwrap()
                .unwrap();
            let mut r = request(&step, &claim, &intent);
            r.budget = (budget, 3600);
            r.fleet_cap = cap;
            store.gate(&r).await.unwrap()
        }
    };

    // billing spends its budget of 1; shop's budget is its own.
    assert_eq!(
        start(1, "billing", "pvc/billing/a", 1, 10).await,
        GateOutcome::Started
    );
    assert_eq!(
        start(2, "shop", "pvc/shop/a", 1, 10).await,
        GateOutcome::Started
    );
    let out = start(3, "billing", "pvc/billing/b", 1, 10).await;
    assert_eq!(refused(&out), Some(Refusal::Budget), "{out:?}");
    assert!(
        matches!(&out, GateOutcome::Ended { reason, .. } if reason.contains("this target's incidents")),
        "{out:?}"
    );

    // Two steps are running (billing's and shop's): with a fleet cap of 2 a third target waits.
    let out = start(4, "orders", "pvc/orders/a", 5, 2).await;
    assert!(
        matches!(&out, GateOutcome::Busy(why) if why.contains("max_concurrent_actions = 2")),
        "{out:?}"
    );
    assert_eq!(
        start(5, "catalog", "pvc/catalog/a", 5, 3).await,
        GateOutcome::Started
    );
}
