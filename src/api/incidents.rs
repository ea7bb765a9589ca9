//! `GET /api/v1/incidents` and `GET /api/v1/incidents/{id}`.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ApiCaller;
use super::error::{ApiError, ErrorBody};
use super::restore_tests::parse_cursor;
use super::AppState;
use crate::domain::alert::normalise_time;
use crate::domain::diagnosis::Diagnosis;
use crate::domain::finding::Finding;
use crate::domain::incident::{Incident, IncidentStatus, TimelineEvent};
use crate::domain::plan::Step;
use crate::store::IncidentFilter;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

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
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<IncidentPage>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let status = p.status;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let before_id = p.cursor.as_deref().map(parse_cursor).transpose()?;
    let filter = IncidentFilter {
        status,
        since: p.since.map(normalise_time),
        until: p.until.map(normalise_time),
        before_id,
        limit: limit + 1,
    };
    let counted = state.intake.consistent_read().await;
    let mut incidents = state.store.list_incidents(&filter).await?;
    let next_cursor = if incidents.len() > limit as usize {
        incidents.truncate(limit as usize);
        incidents.last().map(|i| i.id.to_string())
    } else {
        None
    };
    for i in &mut incidents {
        state.with_pending(i);
    }
    drop(counted);
    Ok(Json(IncidentPage {
        incidents,
        next_cursor,
    }))
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
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<IncidentDetail>, ApiError> {
    let Path(id) =
        id.map_err(|_| ApiError::BadRequest("incident id must be a whole number".into()))?;
    let counted = state.intake.consistent_read().await;
    let mut incident = state
        .store
        .get_incident(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no incident with id {id}")))?;
    state.with_pending(&mut incident);
    drop(counted);
    let (diagnosis, findings, actions, timeline) = tokio::try_join!(
        state.store.diagnosis(id),
        state.store.findings(id),
        state.store.steps(id),
        state.store.timeline(id)
    )?;
    Ok(Json(IncidentDetail {
        incident,
        diagnosis,
        findings,
        actions,
        timeline,
    }))
}
