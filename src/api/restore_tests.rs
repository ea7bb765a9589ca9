//! `POST /api/v1/restore-tests` (admin token) starts the runbook's restore test of one or every
//! configured database in the background; `GET /api/v1/restore-tests` and `/{id}` (API token)
//! show how they went.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AdminCaller, ApiCaller};
use super::error::{ApiError, ErrorBody};
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
    /// One configured database.
    #[serde(default)]
    pub database: Option<String>,
    /// A specific S3 key to restore instead of the newest backup (needs `database` when more
    /// than one database is configured).
    #[serde(default)]
    pub object: Option<String>,
}

/// The tests started (status `running`), or a page of tests.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreTestList {
    pub restore_tests: Vec<RestoreTest>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Paging of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

/// Checks paging parameters: (before_id, limit).
pub(super) fn page(
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<(Option<i64>, u32), ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 200".into(),
        ));
    }
    let before = p.cursor.as_deref().map(parse_cursor).transpose()?;
    Ok((before, limit))
}

/// A page cursor: an id, written as the API writes it (1 to 18 digits, no sign, no leading 0).
pub(super) fn parse_cursor(c: &str) -> Result<i64, ApiError> {
    let well_formed =
        (1..=18).contains(&c.len()) && !c.starts_with('0') && c.bytes().all(|b| b.is_ascii_digit());
    well_formed
        .then(|| c.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

/// Trims a page fetched with `limit + 1` rows and says where the next one starts.
pub(super) fn next_cursor<T>(
    items: &mut Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> i64,
) -> Option<String> {
    if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| id(t).to_string())
    } else {
        None
    }
}

fn start_error(e: StartError) -> ApiError {
    match e {
        StartError::Invalid(m) => ApiError::BadRequest(m),
        StartError::NotConfigured => ApiError::Conflict(e.to_string()),
        StartError::Store(s) => ApiError::Store(s),
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
        (status = 400, description = "Unknown database or bad body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "restore_test.target_url is not configured", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn start(
    caller: AdminCaller,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<RestoreTestList>), ApiError> {
    let req: RestoreTestRequest = optional_json(
        &body,
        "{\"database\": \"…\", \"object\": \"…\"} (both optional)",
    )?;
    let tester = state.restore_tests.clone();
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
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<RestoreTestList>, ApiError> {
    let (before, limit) = page(params)?;
    let mut tests = state
        .store
        .list_restore_tests(before, i64::from(limit) + 1)
        .await?;
    let next_cursor = next_cursor(&mut tests, limit, |t| t.id);
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
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<RestoreTest>, ApiError> {
    let id = path_id(id, "restore test")?;
    found(state.store.get_restore_test(id).await?, "restore test", id)
}

/// An optional JSON body: empty means the default, anything else must parse as `T`.
pub(super) fn optional_json<T: Default + serde::de::DeserializeOwned>(
    body: &Bytes,
    shape: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("body must be {shape}: {e}")))
}

/// The id in the path, or a 400 naming `what` it should identify.
pub(super) fn path_id(id: Result<Path<i64>, PathRejection>, what: &str) -> Result<i64, ApiError> {
    id.map(|Path(id)| id)
        .map_err(|_| ApiError::BadRequest(format!("{what} id must be a whole number")))
}

/// The record, or a 404 naming it.
pub(super) fn found<T>(record: Option<T>, what: &str, id: i64) -> Result<Json<T>, ApiError> {
    record
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no {what} with id {id}")))
}
