//! Credentials checks: the webhook accepts a bearer token and/or basic auth, as Alertmanager's
//! `http_config` sends them; the REST API needs its own bearer token. Compared in constant time;
//! the Authorization header is never logged.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::config::AuthSettings;

/// The credentials the service accepts.
#[derive(Debug, Clone)]
pub struct Auth {
    webhook_token: Option<SecretString>,
    webhook_basic: Option<(String, SecretString)>,
    api_token: Option<SecretString>,
    admin_token: Option<SecretString>,
    insecure: bool,
}

fn non_empty(s: &SecretString) -> Option<SecretString> {
    (!s.expose_secret().is_empty()).then(|| s.clone())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

impl Auth {
    pub fn from_settings(s: &AuthSettings) -> Self {
        let basic = non_empty(&s.webhook_basic_password)
            .filter(|_| !s.webhook_basic_user.is_empty())
            .map(|p| (s.webhook_basic_user.clone(), p));
        Self {
            webhook_token: non_empty(&s.webhook_token),
            webhook_basic: basic,
            api_token: non_empty(&s.api_token),
            admin_token: non_empty(&s.admin_token),
            insecure: s.insecure_no_auth,
        }
    }

    fn open(&self) -> bool {
        self.insecure && self.webhook_token.is_none() && self.webhook_basic.is_none()
    }

    /// Accepts the configured bearer token or basic credentials.
    pub fn check_webhook(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.open() {
            return Ok(());
        }
        let denied = ApiError::Unauthorized {
            challenge: "Bearer realm=\"backup-remediator\"",
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err(denied);
        };
        if let (Some(token), Some(given)) = (&self.webhook_token, bearer(value)) {
            if ct_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
                return Ok(());
            }
        }
        if let (Some((user, pass)), Some((u, p))) = (&self.webhook_basic, basic(value)) {
            // Both compared, always, so timing does not tell which part was wrong.
            let ok_user = ct_eq(u.as_bytes(), user.as_bytes());
            let ok_pass = ct_eq(p.as_bytes(), pass.expose_secret().as_bytes());
            if ok_user & ok_pass {
                return Ok(());
            }
        }
        Err(denied)
    }

    /// Accepts the API bearer token.
    pub fn check_api(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.api_token else {
            return if self.insecure {
                Ok(())
            } else {
                Err(ApiError::Unauthorized {
                    challenge: "Bearer realm=\"backup-remediator\"",
                })
            };
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match given {
            Some(g) if ct_eq(g.as_bytes(), token.expose_secret().as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized {
                challenge: "Bearer realm=\"backup-remediator\"",
            }),
        }
    }
}

impl Auth {
    /// Accepts the admin bearer token (write endpoints). Without a configured admin token the
    /// write endpoints are closed (403), unless the service runs with `insecure_no_auth`.
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.admin_token else {
            return if self.insecure {
                Ok(())
            } else {
                Err(ApiError::Forbidden(
                    "no admin token is configured (auth.admin_token / BR_ADMIN_TOKEN): \
                     write endpoints are disabled"
                        .to_owned(),
                ))
            };
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer);
        match given {
            Some(g) if ct_eq(g.as_bytes(), token.expose_secret().as_bytes()) => Ok(()),
            _ => Err(ApiError::Unauthorized {
                challenge: "Bearer realm=\"backup-remediator-admin\"",
            }),
        }
    }
}

/// The header in which an admin caller names themselves (recorded with approvals).
pub const ACTOR_HEADER: &str = "x-actor";

/// Proof that the request carries the admin token, with who the caller says they are: the
/// `X-Actor` header (printable, at most 100 characters), else `"admin-token"`.
pub struct AdminCaller {
    pub actor: String,
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.check_admin(&parts.headers)?;
        let actor = match parts.headers.get(ACTOR_HEADER) {
            None => None,
            Some(v) => actor(v.as_bytes())?,
        };
        let actor = actor.unwrap_or_else(|| "admin-token".to_owned());
        Ok(AdminCaller { actor })
    }
}

/// The caller's name from `X-Actor`. Header values are bytes: UTF-8 is read as UTF-8 (`José`),
/// anything else as ISO-8859-1, as HTTP/1.1 historically defined them. Blank means not given.
fn actor(raw: &[u8]) -> Result<Option<String>, ApiError> {
    let text = match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    };
    let name = text.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "X-Actor must be at most 100 printable characters".to_owned(),
        ));
    }
    Ok(Some(name.to_owned()))
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn basic(value: &str) -> Option<(String, String)> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Proof that the request carries webhook credentials; extract it before the body.
pub struct WebhookCaller;

impl FromRequestParts<AppState> for WebhookCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.check_webhook(&parts.headers).map(|()| WebhookCaller).inspect_err(|_| {
            metrics::counter!("backup_remediator_webhook_requests_total", "outcome" => "unauthorized").increment(1);
        })
    }
}

/// Proof that the request carries the API token.
pub struct ApiCaller;

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.check_api(&parts.headers).map(|()| ApiCaller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth {
            webhook_token: Some("hook-token".to_owned().into()),
            webhook_basic: Some(("am".to_owned(), "pa:ss".to_owned().into())),
            api_token: Some("api-token".to_owned().into()),
            admin_token: Some("admin-token".to_owned().into()),
            insecure: false,
        }
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn webhook_accepts_the_token_or_basic_and_nothing_else() {
        let a = auth();
        assert!(a.check_webhook(&with("Bearer hook-token")).is_ok());
        assert!(a.check_webhook(&with("bearer hook-token")).is_ok());
        let basic_ok = base64::engine::general_purpose::STANDARD.encode("am:pa:ss");
        assert!(a.check_webhook(&with(&format!("Basic {basic_ok}"))).is_ok());
        let basic_bad = base64::engine::general_purpose::STANDARD.encode("am:pass");
        assert!(a
            .check_webhook(&with(&format!("Basic {basic_bad}")))
            .is_err());
        assert!(a.check_webhook(&with("Bearer api-token")).is_err());
        assert!(a.check_webhook(&with("Bearer hook-token2")).is_err());
        assert!(a.check_webhook(&HeaderMap::new()).is_err());
    }

    #[test]
    fn api_accepts_only_its_own_token() {
        let a = auth();
        assert!(a.check_api(&with("Bearer api-token")).is_ok());
        assert!(a.check_api(&with("Bearer hook-token")).is_err());
        assert!(a.check_api(&HeaderMap::new()).is_err());
    }

    #[test]
    fn x_actor_is_read_as_utf8_or_latin1_and_must_be_printable() {
        assert_eq!(actor("José".as_bytes()).unwrap().as_deref(), Some("José"));
        assert_eq!(actor(b"Jos\xe9").unwrap().as_deref(), Some("José"));
        assert_eq!(actor(b"  ").unwrap(), None);
        assert!(actor(b"a\x07b").is_err());
        assert!(actor("é".repeat(101).as_bytes()).is_err());
        assert_eq!(
            actor("é".repeat(100).as_bytes())
                .unwrap()
                .map(|a| a.chars().count()),
            Some(100)
        );
    }

    #[test]
    fn admin_needs_the_admin_token_and_is_closed_without_one() {
        let a = auth();
        assert!(a.check_admin(&with("Bearer admin-token")).is_ok());
        assert!(a.check_admin(&with("Bearer api-token")).is_err());
        let closed = Auth {
            admin_token: None,
            ..auth()
        };
        let err = closed.check_admin(&with("Bearer admin-token")).unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
    }
}
