//! The CLI's side of approvals: `incidents approve|reject ID STEP` decides a waiting step
//! through a running service's API (the same route, and so the same path and action gate, as
//! `curl` with the admin token), and turns each refusal into a sentence and an exit code.

use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The header naming who decides (`crate::api::ACTOR_HEADER`).
const ACTOR_HEADER: &str = "x-actor";

/// One decision to send.
#[derive(Debug, Clone)]
pub struct DecisionRequest<'a> {
    /// The service's base URL, e.g. `http://127.0.0.1:9095`.
    pub url: &'a str,
    /// The admin token (`BR_ADMIN_TOKEN`).
    pub token: &'a str,
    /// Who decides (sent as `X-Actor`).
    pub actor: &'a str,
    pub incident: i64,
    pub step: i64,
    pub comment: Option<&'a str>,
    pub approve: bool,
}

/// Why a decision did not go through, with the server's reason where it gave one.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("BR_ADMIN_TOKEN is not set: approvals need the service's admin token")]
    NoToken,
    #[error("--url {0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error("the service at {url} did not answer: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("401 unauthorized: {0} (is BR_ADMIN_TOKEN the service's admin token?)")]
    Unauthorized(String),
    #[error("403 forbidden: {0}")]
    Forbidden(String),
    #[error("404 not found: {0}")]
    NotFound(String),
    #[error("409 conflict: {0}")]
    Conflict(String),
    #[error("HTTP {status}: {reason}")]
    Other { status: u16, reason: String },
}

impl ClientError {
    /// The process exit code: 3 the service did not answer or failed (5xx), 4 authentication
    /// or permission (401, 403, no token), 5 not found, 6 conflict (not waiting, not open, already
    /// decided), 1 anything else. (clap uses 2 for a bad command line.)
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => 3,
            ClientError::Other { status, .. } if *status >= 500 => 3,
            ClientError::NoToken | ClientError::Unauthorized(_) | ClientError::Forbidden(_) => 4,
            ClientError::NotFound(_) => 5,
            ClientError::Conflict(_) => 6,
            ClientError::BadUrl(_) | ClientError::Other { .. } => 1,
        }
    }
}

/// The `error` of a JSON error body, else the body itself (clipped).
fn reason(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

/// Sends the decision; returns the decided step as the service answered it.
pub async fn decide(req: &DecisionRequest<'_>) -> Result<Value, ClientError> {
    if req.token.is_empty() {
        return Err(ClientError::NoToken);
    }
    let base = req.url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(ClientError::BadUrl(req.url.to_owned()));
    }
    let verb = if req.approve { "approve" } else { "reject" };
    let url = format!(
        "{base}/api/v1/incidents/{}/actions/{}/{verb}",
        req.incident, req.step
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ClientError::Unreachable {
            url: base.to_owned(),
            reason: e.to_string(),
        })?;
    let mut call = http
        .post(&url)
        .bearer_auth(req.token)
        .header(CONTENT_TYPE, "application/json")
        .body(json!({ "comment": req.comment.unwrap_or_default() }).to_string());
    // The actor may be any UTF-8 name (José): sent as its bytes, as the service reads them.
    if let Ok(actor) = HeaderValue::from_bytes(req.actor.as_bytes()) {
        call = call.header(ACTOR_HEADER, actor);
    }
    let resp = call.send().await.map_err(|e| ClientError::Unreachable {
        url: base.to_owned(),
        reason: e.without_url().to_string(),
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    match status {
        s if s.is_success() => serde_json::from_str(&body).map_err(|e| ClientError::Other {
            status: s.as_u16(),
            reason: format!("the answer is not the decided step: {e}"),
        }),
        StatusCode::UNAUTHORIZED => Err(ClientError::Unauthorized(reason(&body))),
        StatusCode::FORBIDDEN => Err(ClientError::Forbidden(reason(&body))),
        StatusCode::NOT_FOUND => Err(ClientError::NotFound(reason(&body))),
        StatusCode::CONFLICT => Err(ClientError::Conflict(reason(&body))),
        s => Err(ClientError::Other {
            status: s.as_u16(),
            reason: reason(&body),
        }),
    }
}

/// One line saying what was decided, from the step the service answered.
pub fn summary(step: &Value) -> String {
    let s = |k: &str| {
        step.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    format!(
        "{} action {} ({} on {}) of incident {}, decided by {}",
        s("state"),
        step.get("id").and_then(Value::as_i64).unwrap_or_default(),
        s("name"),
        s("target"),
        step.get("incident_id")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
        s("decided_by"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_own_exit_code_and_keeps_the_servers_reason() {
        assert_eq!(
            reason(r#"{"error":"action 7 (restart_primary) is approved"}"#),
            "action 7 (restart_primary) is approved"
        );
        assert_eq!(reason("plain text"), "plain text");
        let codes: Vec<u8> = [
            ClientError::Unreachable {
                url: "u".into(),
                reason: "r".into(),
            },
            ClientError::Unauthorized("x".into()),
            ClientError::Forbidden("x".into()),
            ClientError::NotFound("x".into()),
            ClientError::Conflict("x".into()),
            ClientError::Other {
                status: 503,
                reason: "x".into(),
            },
            ClientError::Other {
                status: 400,
                reason: "x".into(),
            },
        ]
        .iter()
        .map(ClientError::exit_code)
        .collect();
        assert_eq!(codes, [3, 4, 4, 5, 6, 3, 1]);
    }
}
