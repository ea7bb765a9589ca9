//! `POST /api/v1/backups` (an admin) launches the runbook's manual backup Job and watches it
//! in the background; `GET /api/v1/backups` and `/{id}` (API token) show how it went and which
//! objects it uploaded.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AdminCaller, ApiCaller};
use super::error::{ApiError, ErrorBody};
use super::restore_tests::{found, next_cursor, optional_json, page, path_id, PageParams};
use super::AppState;
use crate::domain::manual_backup::ManualBackup;
use crate::runbook::manual_backup::StartError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start, list))
        .routes(routes!(show))
}

/// Which databases to back up; an empty body backs up every configured database.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// Configured database names; anything else is refused.
    #[serde(default)]
    pub databases: Vec<String>,
}

/// A page of manual backups.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupList {
    pub backups: Vec<ManualBackup>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Launch a manual backup.
#[utoipa::path(
    post,
    path = "/api/v1/backups",
    tag = "backups",
    request_body(content = Option<BackupRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "The Job is being created and watched; poll GET /api/v1/backups/{id}", body = ManualBackup),
        (status = 400, description = "Unknown database or bad body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "No Kubernetes API configured", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start(
    caller: AdminCaller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<ManualBackup>), ApiError> {
    let req: BackupRequest = optional_json(&body, "{\"databases\": [\"…\"]} (optional)")?;
    let backups = state.manual_backups.clone();
    let (record, plan) = backups
        .start(
            &req.databases,
            "api",
            &caller.actor,
            caller.on_behalf_of.as_deref(),
        )
        .await
        .map_err(|e| match e {
            StartError::Invalid(m) => ApiError::BadRequest(m),
            StartError::NoKubernetes => ApiError::Conflict(e.to_string()),
            StartError::Store(s) => ApiError::Store(s),
        })?;
    let launched = record.clone();
    tokio::spawn(async move {
        backups.run(&launched, &plan).await;
    });
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// List manual backups, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/backups",
    tag = "backups",
    params(PageParams),
    responses(
        (status = 200, body = BackupList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    _caller: ApiCaller,
    State(state): State<AppState>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<BackupList>, ApiError> {
    let (before, limit) = page(params)?;
    let mut backups = state
        .store
        .list_manual_backups(before, i64::from(limit) + 1)
        .await?;
    let next_cursor = next_cursor(&mut backups, limit, |b| b.id);
    Ok(Json(BackupList {
        backups,
        next_cursor,
    }))
}

/// Show one manual backup.
#[utoipa::path(
    get,
    path = "/api/v1/backups/{id}",
    tag = "backups",
    params(("id" = i64, Path, description = "Manual backup id")),
    responses(
        (status = 200, body = ManualBackup),
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
) -> Result<Json<ManualBackup>, ApiError> {
    let id = path_id(id, "manual backup")?;
    found(
        state.store.get_manual_backup(id).await?,
        "manual backup",
        id,
    )
}
