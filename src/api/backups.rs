//! `POST /api/v1/backups` (an admin) launches the runbook's manual backup Job and watches it
//! in the background; `GET /api/v1/backups` and `/{id}` (API token) show how it went and which
//! objects it uploaded.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AdminCaller, ApiCaller};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, BodyShape, Id, JsonBody, PageParams, Resource};
use super::AppState;
use crate::domain::manual_backup::ManualBackup;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start, list))
        .routes(routes!(show))
}

/// Which databases to back up; an empty body backs up every configured database.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The target to back up: required when several are configured.
    #[serde(default)]
    pub target: Option<String>,
    /// Configured database names of the target; anything else is refused.
    #[serde(default)]
    pub databases: Vec<String>,
}

impl BodyShape for BackupRequest {
    const SHAPE: &'static str =
        "{\"target\": \"…\", \"databases\": [\"…\"]} (optional; target required with several targets)";
}

impl Resource for ManualBackup {
    const WHAT: &'static str = "manual backup";
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
    params(IdempotencyHeader),
    responses(
        (status = 202, description = "The Job is being created and watched; poll GET /api/v1/backups/{id}", body = ManualBackup),
        (status = 400, description = "Unknown target or database, a target not named while several are configured, a bad body or a bad Idempotency-Key", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "A backup Job of the target is running (named), or no Kubernetes API configured", body = ErrorBody),
        (status = 429, description = "The policy's manual_backups budget is used up", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start(
    caller: AdminCaller,
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<BackupRequest>,
) -> Result<(StatusCode, Json<ManualBackup>), ApiError> {
    let key = idempotency_key(&headers)?;
    let backups = state
        .runbooks
        .pick(req.target.as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .backups
        .clone();
    let (record, plan) = backups
        .start(
            &req.databases,
            "api",
            &caller.actor,
            caller.on_behalf_of.as_deref(),
            key.as_deref(),
        )
        .await
        .map_err(super::restore_tests::start_error)?;
    // A repeated key answers the first request's backup; nothing new is launched.
    if let Some(plan) = plan {
        let launched = record.clone();
        tokio::spawn(async move {
            backups.run(&launched, &plan).await;
        });
    }
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// The `Idempotency-Key` header, for the OpenAPI document (read by [`idempotency_key`]).
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyHeader {
    /// A repeat with the same key within 24 h answers the first request's backup; no second Job.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,200}$")]
    idempotency_key: Option<String>,
}

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 200;

/// The request's `Idempotency-Key`: printable ASCII, at most [`MAX_KEY_LEN`] characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= MAX_KEY_LEN
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(k.to_owned()))
        }
        _ => Err(ApiError::BadRequest(format!(
            "Idempotency-Key: 1 to {MAX_KEY_LEN} printable ASCII characters without spaces"
        ))),
    }
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
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<BackupList>, ApiError> {
    let page = params.page()?;
    let mut backups = state
        .store
        .list_manual_backups(page.before, i64::from(page.fetch()))
        .await?;
    let next_cursor = page.next_cursor(&mut backups, |b| b.id);
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
    id: Id<ManualBackup>,
) -> Result<Json<ManualBackup>, ApiError> {
    id.found(state.store.get_manual_backup(id.get()).await?)
}
