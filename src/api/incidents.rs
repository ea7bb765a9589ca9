//! `GET /api/v1/incidents` and `GET /api/v1/incidents/{id}`.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, Id, Page, Resource};
use super::AppState;
use crate::domain::alert::normalise_time;
use crate::domain::diagnosis::Diagnosis;
use crate::domain::finding::Finding;
use crate::domain::incident::{Incident, IncidentStatus, TimelineEvent};
use crate::domain::plan::Step;
use crate::store::IncidentFilter;

/// Largest page of the incident list.
const MAX_LIMIT: u32 = 500;

impl Resource for Incident {
    const WHAT: &'static str = "incident";
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// Query of the incident list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only incidents in this status.
    status: Option<IncidentStatus>,
    /// Only incidents opened at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only incidents opened before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Only incidents routed to this target (a configured target's name).
    #[param(pattern = "^[a-z0-9-]{1,63}$")]
    target: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

/// One page of incidents, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentPage {
    pub incidents: Vec<Incident>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An incident with its diagnosis, the probes' findings and its timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    /// The scenario that explains the failure; absent until the probes have answered.
    pub diagnosis: Option<Diagnosis>,
    /// The remediation plan: each step with the policy's decision and where it stands.
    pub actions: Vec<Step>,
    /// What each probe found.
    pub findings: Vec<Finding>,
    pub timeline: Vec<TimelineEvent>,
}

/// List incidents.
#[utoipa::path(
    get,
    path = "/api/v1/incidents",
    tag = "incidents",
    params(ListParams),
    responses(
        (status = 200, body = IncidentPage),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    _caller: ApiCaller,
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Json<IncidentPage>, ApiError> {
    let page = Page::new(p.limit, p.cursor.as_deref(), MAX_LIMIT)?;
    if let Some(t) = p.target.as_deref().filter(|t| !target_name(t)) {
        return Err(ApiError::BadRequest(format!(
            "target: {t:?} is not a target name (1 to 63 lowercase letters, digits or dashes)"
        )));
    }
    let filter = IncidentFilter {
        target: p.target,
        status: p.status,
        since: p.since.map(normalise_time),
        until: p.until.map(normalise_time),
        before_id: page.before,
        alertname: None,
        limit: page.fetch(),
    };
    let mut incidents = read_list(&state, &filter).await?;
    let next_cursor = page.next_cursor(&mut incidents, |i| i.id);
    Ok(Json(IncidentPage {
        incidents,
        next_cursor,
    }))
}

/// The incidents `filter` selects, with the re-sends counted in memory (the API's list and the
/// pages' both read through here).
pub(super) async fn read_list(
    state: &AppState,
    filter: &IncidentFilter,
) -> Result<Vec<Incident>, ApiError> {
    let counted = state.intake.consistent_read().await;
    let mut incidents = state.store.list_incidents(filter).await?;
    for i in &mut incidents {
        state.with_pending(i);
    }
    drop(counted);
    Ok(incidents)
}

/// Whether `t` can be a target's name (the configured ones, or a namespace for the implied one).
pub(super) fn target_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 63
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Show one incident with its timeline.
#[utoipa::path(
    get,
    path = "/api/v1/incidents/{id}",
    tag = "incidents",
    params(("id" = i64, Path, description = "Incident id")),
    responses(
        (status = 200, body = IncidentDetail),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    _caller: ApiCaller,
    State(state): State<AppState>,
    id: Id<Incident>,
) -> Result<Json<IncidentDetail>, ApiError> {
    read_detail(&state, id.get())
        .await?
        .map(Json)
        .ok_or_else(|| id.not_found())
}

/// The incident `id` with everything recorded about it, or `None` (the API's answer and the
/// pages' both read through here).
pub(super) async fn read_detail(
    state: &AppState,
    id: i64,
) -> Result<Option<IncidentDetail>, ApiError> {
    let counted = state.intake.consistent_read().await;
    let Some(mut incident) = state.store.get_incident(id).await? else {
        return Ok(None);
    };
    state.with_pending(&mut incident);
    drop(counted);
    let (diagnosis, findings, actions, timeline) = tokio::try_join!(
        state.store.diagnosis(id),
        state.store.findings(id),
        state.store.steps(id),
        state.store.timeline(id)
    )?;
    Ok(Some(IncidentDetail {
        incident,
        diagnosis,
        findings,
        actions,
        timeline,
    }))
}
