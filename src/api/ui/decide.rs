//! Approving or rejecting a waiting step from its incident's page. Approve asks first (a
//! confirmation page); both are forms posted with the page's CSRF token, by an admin, and go
//! through the same `decide_step` as the API and Slack: an approval is not a pass, the step
//! still goes through the action gate, whose decision the incident's page then shows.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout::{html, page, Section};
use super::{check_csrf, PageError, Viewer};
use crate::api::approvals::{decide_step, Decider};
use crate::api::AppState;
use crate::domain::plan::StepState;

/// The decision's target in the path.
#[derive(Debug, Deserialize)]
pub struct StepPath {
    id: i64,
    step: i64,
}

/// The form of a decision.
#[derive(Debug, Default, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    /// Why, in a sentence (kept on the timeline).
    #[serde(default)]
    comment: String,
    /// On whose behalf (a note next to the signed-in name, never instead of it).
    #[serde(default)]
    on_behalf_of: String,
}

fn may_decide(viewer: &Viewer) -> Result<(), PageError> {
    if viewer.can_decide() {
        return Ok(());
    }
    let why = if viewer.role != crate::config::Role::Admin {
        "Only an admin may approve or reject an action; you are signed in as a reader."
    } else {
        "The service runs with --insecure-no-auth: its pages are read-only."
    };
    Err(PageError::status(StatusCode::FORBIDDEN, why.to_owned()))
}

fn path_ids(
    p: Result<Path<StepPath>, axum::extract::rejection::PathRejection>,
) -> Result<StepPath, PageError> {
    p.map(|Path(p)| p).map_err(|_| {
        PageError::status(
            StatusCode::BAD_REQUEST,
            "The incident and action ids must be whole numbers.".into(),
        )
    })
}

/// The confirmation page of an approval.
pub async fn confirm(
    State(state): State<AppState>,
    viewer: Viewer,
    path: Result<Path<StepPath>, axum::extract::rejection::PathRejection>,
) -> Result<Response, PageError> {
    let StepPath { id, step } = path_ids(path)?;
    may_decide(&viewer)?;
    let steps = state
        .store
        .steps(id)
        .await
        .map_err(crate::api::ApiError::from)?;
    let Some(s) = steps.into_iter().find(|s| s.id == step) else {
        return Err(PageError::status(
            StatusCode::NOT_FOUND,
            format!("Incident {id} has no action {step}."),
        ));
    };
    if s.state != StepState::WaitingApproval {
        return Err(PageError::status(
            StatusCode::CONFLICT,
            format!(
                "Action {step} ({}) is {}, not waiting for an approval.",
                s.name, s.state
            ),
        ));
    }
    let back = format!("/ui/incidents/{id}");
    let body = html! {
        h1 { "Approve " code { (s.name) } "?" }
        p { "On " code { (s.target) } ", for " a href=(back) { "incident #" (id) } "." }
        p { "Why the plan holds it for a person: " (s.reason) }
        p { "An approval is not a pass: right before it runs, the action gate checks again that the incident is still open, that the policy in force allows it (a dry run changes nothing), the target's lock, cooldown and budget, and the action's precondition. The incident's page then shows the gate's decision." }
        form.decide method="post" action=(format!("/ui/incidents/{id}/actions/{step}/approve")) {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="comment" { "Comment (optional, kept on the timeline)" }
            textarea id="comment" name="comment" maxlength="500" rows="2" {}
            label for="on_behalf_of" { "On behalf of (optional)" }
            input id="on_behalf_of" type="text" name="on_behalf_of" maxlength="100";
            div.buttons {
                button.approve type="submit" { "Yes, approve " (s.name) }
                a href=(back) { "Cancel" }
            }
        }
    };
    Ok(html(page(
        "Approve an action",
        Section::Incidents,
        Some(&viewer),
        body,
    )))
}

async fn decide(
    state: AppState,
    viewer: Viewer,
    headers: HeaderMap,
    path: Result<Path<StepPath>, axum::extract::rejection::PathRejection>,
    form: Result<axum::Form<DecisionForm>, axum::extract::rejection::FormRejection>,
    approve: bool,
) -> Result<Response, PageError> {
    let StepPath { id, step } = path_ids(path)?;
    // A form that cannot be read has no token: refused as a forgery, as a missing token is.
    let form = form.map(|f| f.0).unwrap_or_default();
    check_csrf(&state, &viewer, &headers, &form.csrf)?;
    may_decide(&viewer)?;
    let comment = form.comment.trim();
    if comment.chars().count() > 500 {
        return Err(PageError::status(
            StatusCode::BAD_REQUEST,
            "The comment is longer than 500 characters.".into(),
        ));
    }
    let on_behalf_of = form.on_behalf_of.trim();
    if on_behalf_of.chars().count() > 100 || on_behalf_of.chars().any(char::is_control) {
        return Err(PageError::status(
            StatusCode::BAD_REQUEST,
            "\"On behalf of\" must be at most 100 printable characters.".into(),
        ));
    }
    let decider = Decider {
        name: &viewer.name,
        role: viewer.role.as_str(),
        on_behalf_of: (!on_behalf_of.is_empty()).then_some(on_behalf_of),
    };
    decide_step(&state, id, step, &decider, comment, approve).await?;
    Ok(Redirect::to(&format!("/ui/incidents/{id}?decided={step}#step-{step}")).into_response())
}

/// `POST …/approve`: approves the step.
pub async fn approve(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    path: Result<Path<StepPath>, axum::extract::rejection::PathRejection>,
    form: Result<axum::Form<DecisionForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    decide(state, viewer, headers, path, form, true).await
}

/// `POST …/reject`: rejects the step (the plan moves on, usually to an escalation).
pub async fn reject(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    path: Result<Path<StepPath>, axum::extract::rejection::PathRejection>,
    form: Result<axum::Form<DecisionForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    decide(state, viewer, headers, path, form, false).await
}
