//! The action gate for a resumed step, on both stores: a step left `running` by a process that
//! stopped passes the whole gate again (incident open, claim, policy in force now, attempts,
//! cooldown, budget) before it is resumed; when it may no longer run it ends `interrupted` with
//! the reason. A process that lost its claim does not release the new holder's target lock.

use std::time::Duration;

use backup_remediator::domain::plan::{
    Claim, Decision, GateOutcome, GateRequest, PlannedStep, Refusal, Step, StepKind, StepState,
    Verdict,
};
use backup_remediator::store::Store;
use serde_json::json;

use crate::support::app::{fresh_store, Backend};
use crate::support::incident::new_incident;

on_both_stores!(
    a_resumed_step_the_policy_no_longer_allows_ends_interrupted_with_the_reason,
    a_resumed_step_is_not_held_back_by_its_own_start_but_by_others,
    a_process_that_lost_its_claim_does_not_release_the_new_holders_lock,
);

const READY: [StepState; 3] = [
    StepState::Planned,
    StepState::WaitingApproval,
    StepState::Approved,
];

/// An open incident whose one `restart_primary` step on `target` was started under a claim of
/// `holder` (the step is `running`, its start counted): (incident, the running step, claim).
async fn started_step(store: &Store, n: u32, target: &str, holder: &str) -> (i64, Step, Claim) {
    let (id, step) = planned_restart(store, n, target).await;
    let claim = store
        .claim(id, holder, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let intent = json!({ "restartedAt": "2026-11-24T02:31:00Z" });
    let detail = json!({});
    let mut r = request(&step, &claim, &intent, &detail, &READY, false);
    (r.cooldown_seconds, r.budget, r.max_attempts) = (0, (100, 3600), 10);
    assert_eq!(store.gate(&r).await.unwrap(), GateOutcome::Started);
    let running = store.steps(id).await.unwrap().remove(0);
    assert_eq!(running.state, StepState::Running);
    (id, running, claim)
}

/// An open incident (alert `resume<n>`) with a plan of one `restart_primary` step on `target`.
async fn planned_restart(store: &Store, n: u32, target: &str) -> (i64, Step) {
    let now = chrono::Utc::now();
    let id = new_incident()
        .fingerprint(&format!("resume{n}"))
        .starts_at(now - chrono::Duration::seconds(i64::from(n)))
        .at(now)
        .labels(json!({}))
        .open(store)
        .await;
    let planned = PlannedStep {
        group: 1,
        kind: StepKind::Action,
        name: "restart_primary".parse().unwrap(),
        target: target.into(),
        decision: Decision::Approve,
        reason: "restart".into(),
    };
    assert!(store
        .save_plan(id, &[planned], &json!({}), now)
        .await
        .unwrap());
    (id, store.steps(id).await.unwrap().remove(0))
}

fn request<'a>(
    step: &'a Step,
    claim: &'a Claim,
    intent: &'a serde_json::Value,
    detail: &'a serde_json::Value,
    from: &'a [StepState],
    resume: bool,
) -> GateRequest<'a> {
    GateRequest {
        step,
        claim,
        from,
        verdict: Verdict::Run,
        action: "restart_primary".parse().unwrap(),
        counted: true,
        cooldown_seconds: 3600,
        budget: (1, 3600),
        fleet_cap: 100,
        max_attempts: 1,
        lock_seconds: 600,
        intent,
        detail,
        resume,
    }
}

/// Takes the incident over as `holder` (the first claim lapsed: it is released here, as a
/// lapsed lease would be by the database clock).
async fn take_over(store: &Store, id: i64, old: &Claim, holder: &str) -> Claim {
    store.release(id, &old.holder, None).await.unwrap();
    store
        .claim(id, holder, Duration::from_secs(60))
        .await
        .unwrap()
        .expect("the incident is free after the release")
}

async fn a_resumed_step_the_policy_no_longer_allows_ends_interrupted_with_the_reason(
    backend: Backend,
) {
    let (_db, store) = fresh_store(backend).await;
    let intent = json!({});
    let detail = json!({});
    let running = [StepState::Running];
    let cases: [(Verdict, &str); 2] = [
        (
            Verdict::Refuse(
                Refusal::Policy,
                "policy: restart_primary is never run by the service",
            ),
            "never run",
        ),
        (
            Verdict::DryRun("dry run (policy in force now): would restart"),
            "dry run",
        ),
    ];
    for (n, (verdict, expected)) in cases.into_iter().enumerate() {
        let target = format!("statefulset/ns/p{n}");
        let (id, step, first) = started_step(&store, n as u32, &target, "replica-a").await;
        let claim = take_over(&store, id, &first, "replica-b").await;
        let mut r = request(&step, &claim, &intent, &detail, &running, true);
        r.verdict = verdict;

        let out = store.gate(&r).await.unwrap();

        assert!(
            matches!(&out, GateOutcome::Ended { state: StepState::Interrupted, reason, .. } if reason.contains(expected)),
            "{out:?}"
        );
        let step = store.steps(id).await.unwrap().remove(0);
        assert_eq!(step.state, StepState::Interrupted);
        assert!(step.reason.contains(expected), "{}", step.reason);
        assert!(step.finished_at.is_some());
        let timeline = store.timeline(id).await.unwrap();
        let ended = timeline
            .iter()
            .find(|e| e.kind == "step_interrupted")
            .expect("a step_interrupted event");
        assert!(
            ended.detail["reason"].as_str().unwrap().contains(expected),
            "{:?}",
            ended.detail
        );
        assert!(
            !timeline.iter().any(|e| e.kind == "step_resumed"),
            "not resumed"
        );
    }

    // The incident was closed while the step was running: it is not resumed either.
    let (id, step, first) = started_step(&store, 7, "statefulset/ns/p7", "replica-a").await;
    let claim = take_over(&store, id, &first, "replica-b").await;
    let i = store.get_incident(id).await.unwrap().unwrap();
    store
        .resolve_by_alert(&i.fingerprint, i.starts_at, chrono::Utc::now(), &json!({}))
        .await
        .unwrap();
    let out = store
        .gate(&request(&step, &claim, &intent, &detail, &running, true))
        .await
        .unwrap();
    assert!(
        matches!(&out, GateOutcome::Ended { state: StepState::Interrupted, reason, .. } if reason.contains("resolved")),
        "{out:?}"
    );
}

async fn a_resumed_step_is_not_held_back_by_its_own_start_but_by_others(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let intent = json!({});
    let detail = json!({});
    let running = [StepState::Running];
    // Cooldown 1 h, budget 1/h, one attempt: the step's own start is all there is.
    let (id, step, first) = started_step(&store, 1, "statefulset/ns/a", "replica-a").await;
    let claim = take_over(&store, id, &first, "replica-b").await;
    let out = store
        .gate(&request(&step, &claim, &intent, &detail, &running, true))
        .await
        .unwrap();
    assert_eq!(out, GateOutcome::Started, "its own start does not count");
    let kinds: Vec<String> = store
        .timeline(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"step_resumed".to_owned()), "{kinds:?}");
    store
        .unlock_target("statefulset/ns/a", id, "replica-b")
        .await
        .unwrap();

    // Another incident restarted the same primary since: the cooldown refuses the resume.
    let (id, step, first) = started_step(&store, 2, "statefulset/ns/b", "replica-a").await;
    let claim = take_over(&store, id, &first, "replica-b").await;
    store
        .unlock_target("statefulset/ns/b", id, &first.holder)
        .await
        .unwrap();
    let (other, _, other_claim) = started_step(&store, 3, "statefulset/ns/b", "replica-c").await;
    store
        .unlock_target("statefulset/ns/b", other, &other_claim.holder)
        .await
        .unwrap();
    let mut r = request(&step, &claim, &intent, &detail, &running, true);
    r.budget = (10, 3600);
    let out = store.gate(&r).await.unwrap();
    assert!(
        matches!(&out, GateOutcome::Ended { state: StepState::Interrupted, refusal: Some(Refusal::Cooldown), reason } if reason.contains("cooldown")),
        "{out:?}"
    );
    // And the budget (restarts of any primary): three other starts, budget 3.
    let (id, step, first) = started_step(&store, 4, "statefulset/ns/c", "replica-a").await;
    let claim = take_over(&store, id, &first, "replica-b").await;
    let mut r = request(&step, &claim, &intent, &detail, &running, true);
    r.budget = (3, 3600);
    let out = store.gate(&r).await.unwrap();
    assert!(
        matches!(
            &out,
            GateOutcome::Ended {
                state: StepState::Interrupted,
                refusal: Some(Refusal::Budget),
                ..
            }
        ),
        "{out:?}"
    );
}

async fn a_process_that_lost_its_claim_does_not_release_the_new_holders_lock(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let target = "statefulset/ns/held";
    let intent = json!({});
    let detail = json!({});
    let (id, step, first) = started_step(&store, 1, target, "replica-a").await;
    let claim = take_over(&store, id, &first, "replica-b").await;
    let running = [StepState::Running];
    let mut resume = request(&step, &claim, &intent, &detail, &running, true);
    resume.cooldown_seconds = 0;
    resume.budget = (10, 3600);
    resume.max_attempts = 10;
    assert_eq!(store.gate(&resume).await.unwrap(), GateOutcome::Started);

    // replica-a's apply returns late; it releases the lock it took.
    store
        .unlock_target(target, id, &first.holder)
        .await
        .unwrap();

    let (other, other_step) = planned_restart(&store, 99, target).await;
    let other_claim = store
        .claim(other, "replica-c", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut r = request(&other_step, &other_claim, &intent, &detail, &READY, false);
    r.cooldown_seconds = 0;
    r.budget = (10, 3600);
    let out = store.gate(&r).await.unwrap();
    assert!(
        matches!(&out, GateOutcome::Busy(why) if why.contains(&format!("incident {id}"))),
        "replica-b still holds {target}: {out:?}"
    );
    // The holder's own unlock releases it.
    store
        .unlock_target(target, id, &claim.holder)
        .await
        .unwrap();
    assert_eq!(store.gate(&r).await.unwrap(), GateOutcome::Started);
}
