//! `POST /api/v1/incidents/{id}/actions/{action_id}/approve` and `/reject`: a person decides on
//! a step the policy holds for approval. Needs an admin credential; who decided is that
//! credential's configured name, stored with the step and on the timeline with its role (an
//! `X-Actor` header is kept next to it as an "on behalf of" note, never in its place).

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AdminCaller;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::domain::incident::IncidentStatus;
use crate::domain::plan::{Step, StepState, Transition};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(approve))
        .routes(routes!(reject))
}

/// Optional body of a decision.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why, in a sentence (kept on the timeline).
    #[serde(default)]
    pub comment: String,
}

fn parse_body(body: &Bytes) -> Result<DecisionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    let parsed: DecisionBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body must be {{\"comment\": \"…\"}}: {e}")))?;
    if parsed.comment.chars().count() > 500 {
        return Err(ApiError::BadRequest(
            "comment is longer than 500 characters".into(),
        ));
    }
    Ok(parsed)
}

async fn decide(
    state: &AppState,
    caller: &AdminCaller,
    ids: Result<Path<(i64, i64)>, PathRejection>,
    body: &Bytes,
    approve: bool,
) -> Result<Json<Step>, ApiError> {
    let Path((incident_id, step_id)) = ids.map_err(|_| {
        ApiError::BadRequest("incident and action ids must be whole numbers".into())
    })?;
    let body = parse_body(body)?;
    let decider = Decider {
        name: &caller.actor,
        role: caller.role.as_str(),
        on_behalf_of: caller.on_behalf_of.as_deref(),
    };
    let step = decide_step(
        state,
        incident_id,
        step_id,
        &decider,
        &body.comment,
        approve,
    )
    .await?;
    Ok(Json(step))
}

/// " (already decided by X)" when the step records who decided it.
fn decided_by(step: &Step) -> String {
    step.decided_by
        .as_deref()
        .map(|by| format!(": already decided by {by}"))
        .unwrap_or_default()
}

/// Who decides: the authenticated name (an API credential's configured name, or the Slack user),
/// its role, and the free-text "on behalf of" note an API caller may add with `X-Actor`.
pub(crate) struct Decider<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub on_behalf_of: Option<&'a str>,
}

/// Approves or rejects a waiting step as `decider`: the one path every way of deciding takes (the
/// API, Slack). The store moves the step only from `waiting_approval`, in one statement, so two
/// replicas deciding the same step at once decide it once; the other gets a conflict naming who
/// decided. An approval is not a pass: the approved step still goes through the action gate.
pub(crate) async fn decide_step(
    state: &AppState,
    incident_id: i64,
    step_id: i64,
    decider: &Decider<'_>,
    comment: &str,
    approve: bool,
) -> Result<Step, ApiError> {
    let find = |steps: Vec<Step>| {
        steps.into_iter().find(|s| s.id == step_id).ok_or_else(|| {
            ApiError::NotFound(format!("incident {incident_id} has no action {step_id}"))
        })
    };
    let step = find(state.store.steps(incident_id).await?)?;
    // Only an open incident's waiting step can be decided; an approval is not a pass either:
    // the approved step still goes through the action gate (policy in force, budget, lock…).
    let incident = state
        .store
        .get_incident(incident_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("incident {incident_id} does not exist")))?;
    if incident.status != IncidentStatus::Open {
        return Err(ApiError::Conflict(format!(
            "incident {incident_id} is {}, not open: its actions are no longer decided",
            incident.status
        )));
    }
    if step.state != StepState::WaitingApproval {
        return Err(ApiError::Conflict(format!(
            "action {step_id} ({}) is {}, not waiting for an approval{}",
            step.name,
            step.state,
            decided_by(&step)
        )));
    }
    let (to, event) = if approve {
        (StepState::Approved, "approved")
    } else {
        (StepState::Rejected, "rejected")
    };
    let moved = state
        .store
        .transition(
            &Transition {
                step_id,
                from: &[StepState::WaitingApproval],
                to,
                reason: comment,
                output: None,
                decided_by: Some(decider.name),
                at: Utc::now(),
                event,
                fence: None,
            },
            &json!({ "step": step_id, "name": step.name, "target": step.target,
                     "by": decider.name, "role": decider.role,
                     "on_behalf_of": decider.on_behalf_of, "comment": comment }),
        )
        .await?;
    if !moved {
        let now = find(state.store.steps(incident_id).await?)?;
        return Err(ApiError::Conflict(format!(
            "action {step_id} ({}) is {}, no longer waiting for a decision{}",
            now.name,
            now.state,
            decided_by(&now)
        )));
    }
    tracing::info!(incident_id, step = step_id, action = %step.name, by = %decider.name, role = decider.role, on_behalf_of = decider.on_behalf_of, approved = approve, "approval decision");
    metrics::counter!("backup_remediator_approvals_total", "decision" => event).increment(1);
    if let Some(wake) = &state.approvals {
        wake.notify_waiters();
    }
    find(state.store.steps(incident_id).await?)
}

/// Approve an action the policy holds for a person.
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/actions/{action_id}/approve",
    tag = "approvals",
    params(("id" = i64, Path, description = "Incident id"), ("action_id" = i64, Path, description = "Step id from the incident's `actions`"),
           ("X-Actor" = Option<String>, Header, description = "On whose behalf (a note recorded next to the authenticated name, never instead of it)")),
    request_body(content = Option<DecisionBody>, description = "Optional comment"),
    responses(
        (status = 200, description = "Approved; the service runs it", body = Step),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The incident is not open, or the action is not waiting for an approval", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn approve(
    caller: AdminCaller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, i64)>, PathRejection>,
    body: Bytes,
) -> Result<Json<Step>, ApiError> {
    decide(&state, &caller, ids, &body, true).await
}

/// Reject an action the policy holds for a person; the plan moves on (usually to escalation).
#[utoipa::path(
    post,
    path = "/api/v1/incidents/{id}/actions/{action_id}/reject",
    tag = "approvals",
    params(("id" = i64, Path, description = "Incident id"), ("action_id" = i64, Path, description = "Step id from the incident's `actions`"),
           ("X-Actor" = Option<String>, Header, description = "On whose behalf (a note recorded next to the authenticated name, never instead of it)")),
    request_body(content = Option<DecisionBody>, description = "Optional comment"),
    responses(
        (status = 200, description = "Rejected", body = Step),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The incident is not open, or the action is not waiting for an approval", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn reject(
    caller: AdminCaller,
    State(state): State<AppState>,
    ids: Result<Path<(i64, i64)>, PathRejection>,
    body: Bytes,
) -> Result<Json<Step>, ApiError> {
    decide(&state, &caller, ids, &body, false).await
}
