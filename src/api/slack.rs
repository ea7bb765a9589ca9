//! `POST /slack/interactions`: the Approve/Reject buttons of an incident's Slack message.
//!
//! Slack posts a click as `payload=<JSON>` (form-encoded `block_actions`), signed with the app's
//! signing secret. The route carries no bearer token: a request is accepted only when its
//! signature is valid for its body and its timestamp is within five minutes of now (a replay
//! later is refused). The clicking user must be one of `notify.slack_approvers`; anyone else gets
//! an ephemeral refusal. The decision then takes the API's own path ([`decide_step`]): the store
//! moves the step once, the remediator wakes, the approved step still passes the action gate,
//! and the timeline event makes the notifier update the message to say who decided.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::approvals::{decide_step, Decider};
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::config::NotifySettings;
use crate::workflow::notify::slack::{APPROVE_ACTION, REJECT_ACTION};

/// The route's path, as configured in the Slack app's Interactivity settings.
pub const INTERACTIONS_PATH: &str = "/slack/interactions";
/// A request whose timestamp is further than this from now is refused (Slack's advice).
pub const MAX_SKEW_SECONDS: i64 = 5 * 60;
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

/// What the route needs from the configuration.
pub struct SlackApprovals {
    signing_secret: SecretString,
    approvers: Vec<String>,
    /// `notify.slack_approvers_file`, read at each click (clicks come at human speed).
    approvers_file: Option<std::path::PathBuf>,
    /// The file's last good list: an unreadable or malformed file keeps it.
    from_file: std::sync::Mutex<Vec<String>>,
    http: reqwest::Client,
}

/// Why the approvers file was not taken.
#[derive(Debug, thiserror::Error)]
enum ApproversFileError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("line {0} is not a Slack user id (U0123ABCD or W0123ABCD)")]
    Malformed(usize),
}

/// The user ids of an approvers file: one per line, blank lines and `#` comments skipped.
fn parse_approvers(text: &str) -> Result<Vec<String>, ApproversFileError> {
    let mut ids = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !crate::config::slack_user_id(line) {
            return Err(ApproversFileError::Malformed(n + 1));
        }
        ids.push(line.to_owned());
    }
    Ok(ids)
}

impl SlackApprovals {
    /// Whether Slack user `id` may decide now: in `notify.slack_approvers`, or in the approvers
    /// file as it reads now.
    fn may_decide(&self, id: &str) -> bool {
        if self.approvers.iter().any(|a| a == id) {
            return true;
        }
        let Some(path) = &self.approvers_file else {
            return false;
        };
        let mut last = self
            .from_file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match std::fs::read_to_string(path)
            .map_err(ApproversFileError::from)
            .and_then(|t| parse_approvers(&t))
        {
            Ok(ids) => *last = ids,
            Err(e) => tracing::error!(
                file = %path.display(),
                error = %e,
                "notify.slack_approvers_file not taken; the last list read stays"
            ),
        }
        last.iter().any(|a| a == id)
    }
}

impl SlackApprovals {
    pub fn from_settings(n: &NotifySettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(n.request_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            signing_secret: n.slack_signing_secret.clone(),
            approvers: n.slack_approvers.clone(),
            approvers_file: (!n.slack_approvers_file.is_empty())
                .then(|| std::path::PathBuf::from(&n.slack_approvers_file)),
            from_file: std::sync::Mutex::new(Vec::new()),
            http,
        }
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(interactions))
}

/// `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` keyed with the signing secret: Slack's
/// request signature.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!(
        "v0={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    m.update(b"v0:");
    m.update(timestamp.as_bytes());
    m.update(b":");
    m.update(body);
    m
}

/// Why a request is not Slack's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("Slack interactions are not configured (notify.slack_signing_secret is empty)")]
    NotConfigured,
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("X-Slack-Request-Timestamp is more than 5 minutes from now: refused as a replay")]
    Stale,
    #[error("X-Slack-Signature does not match the request")]
    Forged,
}

/// Checks a request's signature and timestamp (`now` in Unix seconds). The comparison is
/// constant-time (`Mac::verify_slice`).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), Unsigned> {
    if secret.is_empty() {
        return Err(Unsigned::NotConfigured);
    }
    let (Some(ts), Some(sig)) = (timestamp, signature) else {
        return Err(Unsigned::Missing);
    };
    let at: i64 = ts.trim().parse().map_err(|_| Unsigned::Stale)?;
    if (now - at).abs() > MAX_SKEW_SECONDS {
        return Err(Unsigned::Stale);
    }
    let given = sig
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Unsigned::Forged)?;
    mac(secret, ts, body)
        .verify_slice(&given)
        .map_err(|_| Unsigned::Forged)
}

/// The parts of a `block_actions` payload this route reads.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    actions: Vec<Action>,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: String,
}

/// The `payload` field of a form-encoded body.
fn form_payload(body: &[u8]) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let value = pair.strip_prefix(b"payload=")?;
        let spaced: Vec<u8> = value
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    })
}

/// The answer Slack shows only to the person who clicked.
fn ephemeral(text: &str) -> Value {
    json!({ "response_type": "ephemeral", "replace_original": false, "text": text })
}

fn refuse(status: StatusCode, why: impl ToString) -> Response {
    (status, Json(ErrorBody::new(why.to_string()))).into_response()
}

/// Handle a click on an incident message's Approve or Reject button (Slack's interactivity
/// request URL). Open route: only requests carrying Slack's valid signature are accepted.
#[utoipa::path(
    post,
    path = "/slack/interactions",
    tag = "approvals",
    params(
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds; refused when more than 5 minutes from now"),
        ("X-Slack-Signature" = String, Header, description = "v0=hex(HMAC-SHA256(signing secret, \"v0:{timestamp}:{body}\"))"),
    ),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
                 description = "payload=<block_actions JSON>, as Slack sends it"),
    responses(
        (status = 200, description = "Decided, or refused: the ephemeral message Slack shows to the person who clicked", body = Object),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Missing, forged or stale signature", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let slack = &state.slack;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(why) = verify(
        slack.signing_secret.expose_secret().as_bytes(),
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        chrono::Utc::now().timestamp(),
    ) {
        tracing::warn!(reason = %why, "Slack interaction refused");
        crate::metrics::slack_interaction(crate::metrics::SlackOutcome::Unsigned);
        return Ok(refuse(StatusCode::UNAUTHORIZED, why));
    }
    let payload: Payload = form_payload(&body)
        .ok_or_else(|| {
            ApiError::BadRequest("the body must be payload=<JSON>, as Slack sends it".into())
        })
        .and_then(|p| {
            serde_json::from_str(&p).map_err(|e| {
                ApiError::BadRequest(format!("payload is not a Slack interaction: {e}"))
            })
        })?;
    if payload.kind != "block_actions" {
        return Err(ApiError::BadRequest(format!(
            "interaction type {:?} is not handled (only block_actions)",
            payload.kind
        )));
    }
    let Some((approve, incident_id, step_id)) = payload.actions.iter().find_map(|a| {
        let approve = match a.action_id.as_str() {
            APPROVE_ACTION => true,
            REJECT_ACTION => false,
            _ => return None,
        };
        let (i, s) = a.value.split_once(':')?;
        Some((approve, i.parse::<i64>().ok()?, s.parse::<i64>().ok()?))
    }) else {
        return Err(ApiError::BadRequest(
            "no approve or reject action with an incident:step value".into(),
        ));
    };
    let user = &payload.user;
    let answer = if !slack.may_decide(&user.id) {
        tracing::warn!(slack_user = %user.id, incident_id, step = step_id, "Slack user not in notify.slack_approvers refused");
        crate::metrics::slack_interaction(crate::metrics::SlackOutcome::Refused);
        format!(
            "You may not decide remediation steps: Slack user {} is not in notify.slack_approvers.",
            user.id
        )
    } else {
        let actor = match user.username.as_deref().or(user.name.as_deref()) {
            Some(n) if !n.is_empty() => format!("slack:{} ({n})", user.id),
            _ => format!("slack:{}", user.id),
        };
        let verb = if approve { "Approved" } else { "Rejected" };
        let decider = Decider {
            name: &actor,
            role: "slack_approver",
            on_behalf_of: None,
        };
        let outcome = decide_step(
            &state,
            incident_id,
            step_id,
            &decider,
            "from Slack",
            approve,
        )
        .await;
        let label = if outcome.is_ok() {
            crate::metrics::SlackOutcome::Decided
        } else {
            crate::metrics::SlackOutcome::Conflict
        };
        crate::metrics::slack_interaction(label);
        match outcome {
            Ok(step) => format!(
                "{verb} `{}` on {} (incident #{incident_id}) as {actor}.",
                step.name, step.target
            ),
            Err(ApiError::Conflict(m) | ApiError::NotFound(m)) => m,
            Err(e) => return Err(e),
        }
    };
    let body = ephemeral(&answer);
    if let Some(url) = payload
        .response_url
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    {
        // Slack shows the text of a `block_actions` answer only when it comes through the
        // response_url; the request was signed by Slack, so the URL is Slack's.
        let http = slack.http.clone();
        let message = body.clone();
        tokio::spawn(async move {
            if let Err(e) = http.post(url).json(&message).send().await {
                tracing::warn!(error = %e.without_url(), "answering Slack through response_url failed");
            }
        });
    }
    Ok((StatusCode::OK, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Slack's "Verifying requests from Slack" page.
    #[test]
    fn the_signature_of_slacks_documented_example_is_reproduced() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(signature(secret, "1531420618", body.as_bytes()), expected);
        let now = 1_531_420_618 + 60;
        let check = |ts: &str, sig: &str, body: &str, now: i64| {
            verify(secret, Some(ts), Some(sig), body.as_bytes(), now)
        };
        assert_eq!(check("1531420618", expected, body, now), Ok(()));
        assert_eq!(
            check(
                "1531420618",
                expected,
                &body.replace("roadrunner", "coyote"),
                now
            ),
            Err(Unsigned::Forged)
        );
        assert_eq!(
            check("1531420618", expected, body, 1_531_420_618 + 301),
            Err(Unsigned::Stale)
        );
        assert_eq!(
            check("1531420618", expected, body, 1_531_420_618 - 301),
            Err(Unsigned::Stale)
        );
        assert_eq!(
            check("1531420618", "v0=zz", body, now),
            Err(Unsigned::Forged)
        );
        assert_eq!(
            verify(b"", Some("1"), Some(expected), body.as_bytes(), now),
            Err(Unsigned::NotConfigured)
        );
        assert_eq!(
            verify(secret, None, Some(expected), body.as_bytes(), now),
            Err(Unsigned::Missing)
        );
    }

    #[test]
    fn the_payload_field_of_a_form_body_is_decoded() {
        let body = b"foo=1&payload=%7B%22type%22%3A%22block_actions%22%2C%22a%22%3A%22x+y%22%7D";
        assert_eq!(
            form_payload(body).as_deref(),
            Some(r#"{"type":"block_actions","a":"x y"}"#)
        );
        assert_eq!(form_payload(b"nothing=here"), None);
    }

    #[test]
    fn an_approvers_file_is_one_user_id_a_line_and_a_malformed_one_is_refused_whole() {
        assert_eq!(
            parse_approvers("# on call\nU0123ABCD\n\n  W0456EFGH  \n").unwrap(),
            ["U0123ABCD", "W0456EFGH"]
        );
        assert!(parse_approvers("").unwrap().is_empty());
        assert!(matches!(
            parse_approvers("U0123ABCD\nalice\n"),
            Err(ApproversFileError::Malformed(2))
        ));
    }
}
