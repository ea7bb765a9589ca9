//! Who is calling: the webhook accepts any configured bearer token or basic-auth pair, as
//! Alertmanager's `http_config` sends them; the REST API accepts named readers and admins, and
//! the write endpoints only admins. The credentials in force can be replaced while the service
//! runs ([`reload`]); the Authorization header is never logged.

mod compare;
mod reload;
pub use reload::Trigger as ReloadTrigger;

use std::sync::{Arc, Mutex, RwLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::config::{AuthSettings, ConfigError, CredentialSet, Role};
use compare::{find_principal, find_webhook_basic, find_webhook_bearer};

const CHALLENGE: &str = "Bearer realm=\"backup-remediator\"";
const ADMIN_CHALLENGE: &str = "Bearer realm=\"backup-remediator-admin\"";

/// The name an unauthenticated read is recorded under when `insecure_no_auth` leaves reads open.
pub const ANONYMOUS: &str = "anonymous";

/// The credentials the service accepts, replaceable while it runs.
#[derive(Debug)]
pub struct Auth {
    settings: AuthSettings,
    current: RwLock<Arc<CredentialSet>>,
    /// SHA-256 of the credential files' contents last loaded (or last failed to load).
    seen: Mutex<[u8; 32]>,
    /// The pages' trusted proxy (`auth.proxy_header`…).
    proxy: Option<crate::config::TrustedProxy>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Identity {
    /// The credential's configured name (`admin` / `reader` for the single-token settings).
    pub name: String,
    pub role: Role,
}

impl Auth {
    /// Reads every credential (files included); an error names the key.
    pub fn new(settings: &AuthSettings) -> Result<Self, ConfigError> {
        let set = settings.credentials()?;
        settings.trusted_proxy()?;
        Ok(Self::with(settings, set))
    }

    /// The credentials `set` (already read from `settings`).
    pub fn with(settings: &AuthSettings, set: CredentialSet) -> Self {
        Self {
            seen: Mutex::new(reload::fingerprint(&settings.files())),
            // Checked when the settings were loaded (and by `new`): a malformed one is none.
            proxy: settings.trusted_proxy().ok().flatten(),
            settings: settings.clone(),
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// The credentials in force now.
    fn snapshot(&self) -> Arc<CredentialSet> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// `auth.insecure_no_auth`: the pages are then read-only.
    pub(crate) fn insecure(&self) -> bool {
        self.settings.insecure_no_auth
    }

    /// Reads are open to anyone (`insecure_no_auth` and no reader configured).
    pub(crate) fn anonymous_reads(&self) -> bool {
        self.insecure() && !self.snapshot().has_readers()
    }

    /// The trusted proxy of the pages, if configured (checked when the settings were loaded).
    pub(crate) fn trusted_proxy(&self) -> Option<&crate::config::TrustedProxy> {
        self.proxy.as_ref()
    }

    /// The named credential whose token is `token` (the pages' sign-in form), with the SHA-256
    /// of its token, which a session is bound to.
    pub(crate) fn principal_by_token(&self, token: &str) -> Option<(Identity, [u8; 32])> {
        let set = self.snapshot();
        let i = find_principal(&set, token).index?;
        set.principals.get(i).map(|p| {
            (
                Identity {
                    name: p.name.clone(),
                    role: p.role,
                },
                p.token_sha256,
            )
        })
    }

    /// The role and token hash of the credential named `name` now (None once it is revoked).
    pub(crate) fn principal_by_name(&self, name: &str) -> Option<(Role, [u8; 32])> {
        self.snapshot()
            .principals
            .iter()
            .find(|p| p.name == name)
            .map(|p| (p.role, p.token_sha256))
    }

    /// Accepts any configured bearer token or basic credentials.
    pub fn check_webhook(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let set = self.snapshot();
        if self.insecure() && !set.has_webhook() {
            return Ok(());
        }
        let denied = ApiError::Unauthorized {
            challenge: CHALLENGE,
        };
        let Some(value) = authorization(headers) else {
            return Err(denied);
        };
        let ok = match (bearer(value), basic(value)) {
            (Some(token), _) => find_webhook_bearer(&set, token).index.is_some(),
            (None, Some((u, p))) => find_webhook_basic(&set, &u, &p).index.is_some(),
            (None, None) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(denied)
        }
    }

    /// The named credential presented as a bearer token, if any matches.
    pub fn identify(&self, headers: &HeaderMap) -> Option<Identity> {
        let token = authorization(headers).and_then(bearer)?;
        let set = self.snapshot();
        let i = find_principal(&set, token).index?;
        set.principals.get(i).map(|p| Identity {
            name: p.name.clone(),
            role: p.role,
        })
    }

    /// Accepts any reader or admin. With `insecure_no_auth` and no reader configured, reads are
    /// open (the caller is then `anonymous`, unless it presented a valid credential).
    pub fn check_api(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        if let Some(who) = self.identify(headers) {
            return Ok(who);
        }
        if self.insecure() && !self.snapshot().has_readers() {
            return Ok(Identity {
                name: ANONYMOUS.to_owned(),
                role: Role::Reader,
            });
        }
        Err(ApiError::Unauthorized {
            challenge: CHALLENGE,
        })
    }

    /// Accepts only an admin, whatever `insecure_no_auth` says. Without any admin configured the
    /// write endpoints are closed (403).
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        if !self.snapshot().has_admins() {
            return Err(ApiError::Forbidden(
                "no admin credential is configured (auth.admins, auth.admins_file or \
                 BR_ADMIN_TOKEN): write endpoints are disabled, also with --insecure-no-auth"
                    .to_owned(),
            ));
        }
        match self.identify(headers) {
            Some(who) if who.role == Role::Admin => Ok(who),
            _ => Err(ApiError::Unauthorized {
                challenge: ADMIN_CHALLENGE,
            }),
        }
    }
}

/// The header in which an admin caller may say on whose behalf they act. It is recorded next to
/// the authenticated name, never instead of it.
pub const ACTOR_HEADER: &str = "x-actor";

/// Proof that the request carries an admin credential.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    /// The authenticated name: what is recorded as the decider or requester.
    pub actor: String,
    pub role: Role,
    /// `X-Actor` (printable, at most 100 characters): a free-text "on behalf of" note.
    pub on_behalf_of: Option<String>,
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let who = state.auth.check_admin(&parts.headers)?;
        let on_behalf_of = match parts.headers.get(ACTOR_HEADER) {
            None => None,
            Some(v) => actor(v.as_bytes())?,
        };
        Ok(AdminCaller {
            actor: who.name,
            role: who.role,
            on_behalf_of,
        })
    }
}

/// The `X-Actor` note. Header values are bytes: UTF-8 is read as UTF-8 (`José`), anything else
/// as ISO-8859-1, as HTTP/1.1 historically defined them. Blank means not given.
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

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
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
        state
            .auth
            .check_webhook(&parts.headers)
            .map(|()| WebhookCaller)
            .inspect_err(|_| {
                crate::metrics::webhook_request(crate::metrics::WebhookOutcome::Unauthorized);
            })
    }
}

/// Proof that the request carries a reader's or an admin's credential.
pub struct ApiCaller(pub Identity);

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.check_api(&parts.headers).map(ApiCaller)
    }
}

#[cfg(test)]
mod tests;
