//! `GET /api/v1/whoami`: the authenticated name and role of the caller, so a script (or a
//! person rotating a token) can check which credential it holds.

use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{ApiCaller, Identity};
use super::error::ErrorBody;
use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(whoami))
}

/// Who the presented credential belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    tag = "auth",
    responses(
        (status = 200, description = "The credential's configured name and its role", body = Identity),
        (status = 401, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn whoami(ApiCaller(who): ApiCaller) -> Json<Identity> {
    Json(who)
}
