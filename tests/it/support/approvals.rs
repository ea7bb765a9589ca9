//! An open incident whose plan waits for a person, built through the store as the engine and
//! the remediator build it (diagnosed, planned, waiting_approval with its `approval_requested`
//! event).

use backup_remediator::domain::diagnosis::{Diagnosis, Evidence, Scenario};
use backup_remediator::domain::plan::{Decision, PlannedStep, StepKind, StepState, Transition};
use backup_remediator::store::Store;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::incident::new_incident;

pub const TARGET: &str = "statefulset/link-services/postgres-primary";

/// Opens an incident with one step per name, each waiting for an approval. Returns the
/// incident id and the step ids, in order.
pub async fn waiting_for_approval(store: &Store, names: &[&str]) -> (i64, Vec<i64>) {
    let now = Utc::now();
    let id = new_incident().at(now).open(store).await;
    let diagnosis = Diagnosis {
        scenario: Scenario::DatabaseConnection,
        confidence: 0.9,
        summary: "The primary does not answer.".into(),
        evidence: vec![Evidence {
            probe: "database".into(),
            kind: "direct".into(),
            text: "connection refused".into(),
        }],
        also: vec![],
        context: vec![],
    };
    assert!(store
        .save_diagnosis(id, &[], &diagnosis, now)
        .await
        .unwrap());
    let planned: Vec<PlannedStep> = names
        .iter()
        .map(|name| PlannedStep {
            group: 1,
            kind: StepKind::Action,
            name: name.parse().unwrap(),
            target: TARGET.into(),
            decision: Decision::Approve,
            reason: "the primary does not answer".into(),
        })
        .collect();
    store
        .save_plan(id, &planned, &json!({}), now)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for step in store.steps(id).await.unwrap() {
        let tr = Transition {
            step_id: step.id,
            from: &[StepState::Planned],
            to: StepState::WaitingApproval,
            reason: "",
            output: None,
            decided_by: None,
            at: now,
            event: "approval_requested",
            fence: None,
        };
        let detail = json!({ "step": step.id, "name": step.name, "target": TARGET,
            "state": "waiting_approval",
            "output": { "approve": format!("/api/v1/incidents/{id}/actions/{}/approve", step.id) } });
        assert!(store.transition(&tr, &detail).await.unwrap());
        ids.push(step.id);
    }
    (id, ids)
}

/// A `block_actions` click on a message's Approve (`approve_step`) or Reject (`reject_step`)
/// button as Slack sends it, form-encoded, by Slack user `user` (user name `alice`).
pub fn click(user: &str, action: &str, incident: i64, step: i64, response_url: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user, "username": "alice", "name": "alice", "team_id": "T0TEAM" },
        "api_app_id": "A0APP", "token": "legacy-verification-token",
        "container": { "type": "message", "message_ts": "1700000000.000100", "channel_id": "C0INCIDENTS" },
        "trigger_id": "123.456.abc",
        "team": { "id": "T0TEAM", "domain": "example" },
        "channel": { "id": "C0INCIDENTS", "name": "db-incidents" },
        "response_url": response_url,
        "actions": [{
            "action_id": action, "block_id": format!("approval:{step}"),
            "text": { "type": "plain_text", "text": "Approve" },
            "value": format!("{incident}:{step}"), "type": "button", "action_ts": "1700000001.0001"
        }]
    });
    let json = payload.to_string();
    let encoded = percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC);
    format!("payload={encoded}")
}

/// Slack's signature of `body` at `timestamp` (`X-Slack-Signature`), computed here with the
/// HMAC crate as Slack documents it, independently of the service's code.
pub fn slack_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}
