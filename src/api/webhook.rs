//! `POST /webhook/alertmanager`: Alertmanager's webhook receiver.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::WebhookCaller;
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::domain::alert;
use crate::workflow::intake::AlertResult;

/// Answer to an accepted delivery: what happened to each alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub alerts: Vec<AlertResult>,
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

fn count(outcome: &'static str) {
    use crate::static_counter as c;
    const NAME: &str = "backup_remediator_webhook_requests_total";
    let counter = match outcome {
        "accepted" => c!("backup_remediator_webhook_requests_total", "outcome" => "accepted"),
        "bad_request" => c!("backup_remediator_webhook_requests_total", "outcome" => "bad_request"),
        "payload_too_large" => {
            c!("backup_remediator_webhook_requests_total", "outcome" => "payload_too_large")
        }
        "store_unavailable" => {
            c!("backup_remediator_webhook_requests_total", "outcome" => "store_unavailable")
        }
        _ => {
            metrics::counter!(NAME, "outcome" => outcome).increment(1);
            return;
        }
    };
    counter.increment(1);
}

/// Receive an Alertmanager notification (webhook payload version 4).
///
/// Each firing `PostgreSQLBackupFailed` alert opens or joins one incident; the answer comes once
/// it is stored. Diagnosis and remediation follow in the background.
#[utoipa::path(
    post,
    path = "/webhook/alertmanager",
    tag = "webhook",
    request_body(content = alert::WebhookPayload, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored", body = Accepted),
        (status = 400, description = "Malformed payload", body = ErrorBody),
        (status = 401, description = "Missing or wrong credentials", body = ErrorBody),
        (status = 413, description = "Body over the configured limit", body = ErrorBody),
        (status = 503, description = "Store unavailable; Alertmanager retries", body = ErrorBody),
    ),
    security(("bearer" = []), ("basic" = []))
)]
pub async fn receive(
    _caller: WebhookCaller,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            count("payload_too_large");
            ApiError::PayloadTooLarge(state.body_limit)
        } else {
            count("bad_request");
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let notification = alert::decode(&body).map_err(|e| {
        count("bad_request");
        tracing::info!(error = %e, "rejected webhook payload");
        ApiError::BadRequest(e.to_string())
    })?;
    match state.intake.accept(&notification).await {
        Ok(alerts) => {
            count("accepted");
            Ok((StatusCode::ACCEPTED, Json(Accepted { alerts })))
        }
        Err(e) => {
            count(if e.is_unavailable() {
                "store_unavailable"
            } else {
                "error"
            });
            Err(e.into())
        }
    }
}
