//! The one HTTP error type: a status and a JSON body `{"error": "..."}`. 5xx details stay in the
//! log; the client sees a plain sentence.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{StoreCondition, StoreError};

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in a sentence.
    pub error: String,
    /// On a 503: the store's condition (`read_only`, `full`, `busy`, `conflict`…); the request
    /// can be retried as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<StoreCondition>,
}

impl ErrorBody {
    /// A body saying `error`, with no store condition.
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            reason: None,
        }
    }
}

/// An error answered over HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid credentials")]
    Unauthorized { challenge: &'static str },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request axum could not read (a body over the limit, a body that broke off): its
    /// status and sentence, in our format.
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
}

impl ApiError {
    /// An extractor's rejection: `status` and its text.
    pub fn rejected(status: StatusCode, text: impl AsRef<str>) -> Self {
        let text = text.as_ref().trim();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_lowercase()
        } else {
            text.to_owned()
        };
        ApiError::Rejected { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, self.to_string()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.clone()),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, self.to_string()),
            ApiError::Rejected { status, message } => (*status, message.clone()),
            ApiError::Store(e) if e.is_unavailable() => {
                tracing::error!(error = %e, "store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    e.condition()
                        .map_or("the incident store is unavailable; retry later", |c| {
                            c.sentence()
                        })
                        .to_owned(),
                )
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the service log".to_owned(),
                )
            }
        };
        let reason = match &self {
            ApiError::Store(e) => e.condition(),
            _ => None,
        };
        let body = ErrorBody {
            error: message,
            reason,
        };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::Unauthorized { challenge } = self {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_store_condition_answers_503_naming_it() {
        for &c in StoreCondition::ALL {
            let err = ApiError::Store(StoreError::Unavailable(c, sqlx::Error::PoolTimedOut));
            let resp = err.into_response();
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{c}");
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["reason"], c.as_str());
            assert_eq!(body["error"], c.sentence());
        }
    }
}
