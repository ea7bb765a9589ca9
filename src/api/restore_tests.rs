//! `POST /api/v1/restore-tests` (admin token) starts the runbook's restore test of one or every
//! configured database in the background; `GET /api/v1/restore-tests` and `/{id}` (API token)
//! show how they went.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AdminCaller, ApiCaller};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, BodyShape, Id, JsonBody, PageParams, Resource};
use super::AppState;
use crate::domain::restore_test::RestoreTest;
use crate::runbook::restore::{StartError, TestRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start, list))
        .routes(routes!(show))
}

/// What to test; an empty body tests the newest backup of every configured database.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestRequest {
    /// The target whose backups to test: required when several are configured.
    #[serde(default)]
    pub target: Option<String>,
    /// One configured database of the target.
    #[serde(default)]
    pub database: Option<String>,
    /// A specific S3 key to restore instead of the newest backup (needs `database` when more
    /// than one database is configured).
    #[serde(default)]
    pub object: Option<String>,
}

impl BodyShape for RestoreTestRequest {
    const SHAPE: &'static str = "{\"target\": \"…\", \"database\": \"…\", \"object\": \"…\"} (all optional; target required with several targets)";
}

impl Resource for RestoreTest {
    const WHAT: &'static str = "restore test";
}

/// The tests started (status `running`), or a page of tests.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreTestList {
    pub restore_tests: Vec<RestoreTest>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// How the API answers a runbook procedure that could not start (restore tests, manual backups).
pub(super) fn start_error(e: StartError) -> ApiError {
    match e {
        StartError::Invalid(m) => ApiError::BadRequest(m),
        StartError::UnknownDatabase { .. } => ApiError::BadRequest(e.to_string()),
        StartError::UnknownObject { .. } => ApiError::NotFound(e.to_string()),
        StartError::NotConfigured
        | StartError::NoKubernetes
        | StartError::Superuser { .. }
        | StartError::Busy(_) => ApiError::Conflict(e.to_string()),
        StartError::Scratch(_) => {
            ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        StartError::OverBudget(m) => ApiError::rejected(StatusCode::TOO_MANY_REQUESTS, m),
        StartError::Store { source, .. } => ApiError::Store(source),
    }
}

/// Start restore tests.
#[utoipa::path(
    post,
    path = "/api/v1/restore-tests",
    tag = "restore tests",
    request_body(content = Option<RestoreTestRequest>, content_type = "application/json"),
    responses(
        (status = 202, description = "Started; poll GET /api/v1/restore-tests/{id}", body = RestoreTestList),
        (status = 400, description = "Unknown target or database, a target not named while several are configured, or a bad body", body = ErrorBody),
        (status = 404, description = "The requested object does not exist", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "restore_test.target_url is not configured, or is a superuser without restore_test.allow_superuser", body = ErrorBody),
        (status = 503, description = "The store or the restore-test PostgreSQL is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start(
    caller: AdminCaller,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RestoreTestRequest>,
) -> Result<(StatusCode, Json<RestoreTestList>), ApiError> {
    let tester = state
        .runbooks
        .pick(req.target.as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .restore
        .clone();
    let request = TestRequest {
        database: req.database,
        object: req.object,
        trigger: "api".into(),
        actor: caller.actor,
    };
    let tests = tester.start(&request, None).await.map_err(start_error)?;
    let running = tests.clone();
    tokio::spawn(async move {
        Arc::clone(&tester).run(running).await;
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(RestoreTestList {
            restore_tests: tests,
            next_cursor: None,
        }),
    ))
}

/// List restore tests, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/restore-tests",
    tag = "restore tests",
    params(PageParams),
    responses(
        (status = 200, body = RestoreTestList),
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
) -> Result<Json<RestoreTestList>, ApiError> {
    let page = params.page()?;
    let mut tests = state
        .store
        .list_restore_tests(page.before, i64::from(page.fetch()))
        .await?;
    let next_cursor = page.next_cursor(&mut tests, |t| t.id);
    Ok(Json(RestoreTestList {
        restore_tests: tests,
        next_cursor,
    }))
}

/// Show one restore test.
#[utoipa::path(
    get,
    path = "/api/v1/restore-tests/{id}",
    tag = "restore tests",
    params(("id" = i64, Path, description = "Restore test id")),
    responses(
        (status = 200, body = RestoreTest),
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
    id: Id<RestoreTest>,
) -> Result<Json<RestoreTest>, ApiError> {
    id.found(state.store.get_restore_test(id.get()).await?)
}
