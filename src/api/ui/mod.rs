//! The pages a person reads in a browser, under `/ui/`: incidents, one incident (with its
//! approvals), restore tests and manual backups. Server-rendered HTML (maud templates, checked
//! at compile time, escaped), one stylesheet served from the binary, no script: everything works
//! with JavaScript off.
//!
//! Who is reading ([`Viewer`]): a session cookie set by the sign-in form ([`signin`]), or the
//! name a trusted proxy puts in `auth.proxy_header` on a connection from `auth.proxy_cidrs`, or
//! anyone with `--insecure-no-auth` and no reader configured (read-only). Signed out, every page
//! sends the browser to `/ui/sign-in`. Every answer carries a strict Content-Security-Policy
//! (no script at all, styles only from this origin, no framing) and no-referrer.

mod decide;
mod incidents;
mod layout;
mod runbook;
pub mod session;
mod signin;
mod timeline;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::AppState;
use crate::config::Role;
use session::SessionKey;

/// What the pages need beyond the API's state.
#[derive(Debug, Clone)]
pub struct PageSettings {
    /// Signs the session cookies and CSRF tokens (derived from the installation key).
    pub key: SessionKey,
    /// Whether the cookie is `Secure`: unless the service listens on loopback.
    pub secure_cookie: bool,
    /// `notify.rpo_hours`: the RPO impact of an incident is read against it.
    pub rpo_hours: u64,
}

/// The pages' routes (not in the OpenAPI document: they are not API).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/static/ui.css", get(stylesheet))
        .route("/ui/sign-in", get(signin::form).post(signin::sign_in))
        .route("/ui/sign-out", axum::routing::post(signin::sign_out))
        .route("/ui/incidents", get(incidents::list))
        .route("/ui/incidents/{id}", get(incidents::show))
        .route(
            "/ui/incidents/{id}/actions/{step}/approve",
            get(decide::confirm).post(decide::approve),
        )
        .route(
            "/ui/incidents/{id}/actions/{step}/reject",
            axum::routing::post(decide::reject),
        )
        .route("/ui/restore-tests", get(runbook::restore_tests))
        .route("/ui/backups", get(runbook::backups))
        .route("/ui/{*rest}", get(unknown))
        .layer(middleware::from_fn(security_headers))
}

/// The strict policy of every page: nothing but this origin's stylesheet, forms posted here,
/// never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    // Pages hold CSRF tokens and incident data: never stored by a shared cache. The stylesheet
    // may be kept for a while.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn home(_viewer: Viewer) -> Redirect {
    Redirect::to("/ui/incidents")
}

async fn unknown(_viewer: Viewer, uri: axum::http::Uri) -> PageError {
    PageError::status(
        StatusCode::NOT_FOUND,
        format!("There is no page at {}.", uri.path()),
    )
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("ui.css"),
    )
        .into_response()
}

/// How the reader of a page was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The sign-in form's session cookie.
    Session,
    /// The trusted proxy's header.
    Proxy,
    /// Nobody: `--insecure-no-auth` leaves reads open.
    Anonymous,
}

/// Who reads the page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    pub role: Role,
    pub via: Via,
    /// The CSRF token of the forms on pages served to this reader.
    pub csrf: String,
    /// What the CSRF token is made from.
    csrf_subject: String,
    /// Whether the service runs with `--insecure-no-auth` (the pages are then read-only).
    insecure: bool,
}

impl Viewer {
    /// Whether the pages offer (and accept) approvals from this reader: an admin, signed in,
    /// on a service that checks credentials.
    pub fn can_decide(&self) -> bool {
        self.role == Role::Admin && self.via != Via::Anonymous && !self.insecure
    }
}

/// The peer address of the connection (set by the server loop; absent in `oneshot` tests).
fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Where to come back to after signing in: this page (with its query), when it is a page.
fn here(parts: &Parts) -> String {
    let target = parts
        .uri
        .path_and_query()
        .map_or("/ui/incidents", |p| p.as_str());
    signin::safe_next(target).to_owned()
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let key = &state.pages.key;
        let insecure = state.auth.insecure();
        if let Some(proxy) = state.auth.trusted_proxy() {
            let named = parts
                .headers
                .get(proxy.header.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
                .filter(|n| !n.is_empty());
            match (named, peer(parts)) {
                (Some(name), Some(ip)) if proxy.trusts(ip) => {
                    let Some(role) = proxy.role_of(&name) else {
                        return Err(PageError::status(
                            StatusCode::FORBIDDEN,
                            "Your proxy signed you in, but your name is in neither \
                             auth.proxy_admins nor auth.proxy_readers: ask an administrator \
                             of this service to add it."
                                .to_owned(),
                        ));
                    };
                    let subject = format!("proxy:{}", name.to_lowercase());
                    return Ok(Viewer {
                        csrf: key.csrf(&subject),
                        csrf_subject: subject,
                        name,
                        role,
                        via: Via::Proxy,
                        insecure,
                    });
                }
                (Some(_), _) => {
                    tracing::debug!(peer = ?peer(parts), "ignored the proxy user header from an untrusted address");
                }
                _ => {}
            }
        }
        let cookie = session::read_cookie(
            &parts.headers,
            session::cookie_name(state.pages.secure_cookie),
        );
        if let Some(s) = cookie.and_then(|c| key.open(c, chrono::Utc::now().timestamp())) {
            // The credential must still be in force, with the same role and token.
            let current = state.auth.principal_by_name(&s.name);
            if current.is_some_and(|(role, hash)| role == s.role && key.binding(&hash) == s.binding)
            {
                let subject = s.csrf_subject();
                return Ok(Viewer {
                    csrf: key.csrf(&subject),
                    csrf_subject: subject,
                    name: s.name,
                    role: s.role,
                    via: Via::Session,
                    insecure,
                });
            }
        }
        if state.auth.anonymous_reads() {
            return Ok(Viewer {
                name: super::auth::ANONYMOUS.to_owned(),
                role: Role::Reader,
                via: Via::Anonymous,
                csrf: String::new(),
                csrf_subject: String::new(),
                insecure,
            });
        }
        Err(PageError::SignIn { next: here(parts) })
    }
}

/// A request another site's page made the browser send: refused before anything is read.
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

/// Refuses a form post that is not an admin's (or on a read-only service), that another site
/// made the browser send, or whose CSRF token is missing or not this reader's.
pub fn check_csrf(
    state: &AppState,
    viewer: &Viewer,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), PageError> {
    let forbidden = |why: &str| Err(PageError::status(StatusCode::FORBIDDEN, why.to_owned()));
    if cross_site(headers) {
        return forbidden("A form sent from another site is refused.");
    }
    if viewer.csrf_subject.is_empty() || !state.pages.key.csrf_ok(&viewer.csrf_subject, csrf) {
        return forbidden(
            "The form's security token is missing or does not match your session: reload the \
             page and try again.",
        );
    }
    Ok(())
}

/// A page that could not be shown: sent to sign-in, or an error page with its status.
#[derive(Debug)]
pub enum PageError {
    /// Not signed in: to `/ui/sign-in`, then back to `next`.
    SignIn { next: String },
    /// An error page: its status and a sentence.
    Status(StatusCode, String),
}

impl PageError {
    pub fn status(status: StatusCode, sentence: String) -> Self {
        PageError::Status(status, sentence)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let status = |s| PageError::Status(s, e.to_string());
        match &e {
            ApiError::BadRequest(_) => status(StatusCode::BAD_REQUEST),
            ApiError::Unauthorized { .. } => PageError::SignIn {
                next: "/ui/incidents".into(),
            },
            ApiError::Forbidden(_) => status(StatusCode::FORBIDDEN),
            ApiError::NotFound(_) => status(StatusCode::NOT_FOUND),
            ApiError::Conflict(_) => status(StatusCode::CONFLICT),
            ApiError::PayloadTooLarge(_) => status(StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::Rejected { status: s, .. } => status(*s),
            ApiError::Store(s) if s.is_unavailable() => {
                tracing::error!(error = %s, "store unavailable");
                PageError::Status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    s.condition()
                        .map_or("The incident store is unavailable; retry later.", |c| {
                            c.sentence()
                        })
                        .to_owned(),
                )
            }
            ApiError::Store(s) => {
                tracing::error!(error = %s, "store error");
                PageError::Status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error; see the service log.".to_owned(),
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn { next } => {
                let next: String = percent_encoding::utf8_percent_encode(
                    &next,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                Redirect::to(&format!("/ui/sign-in?next={next}")).into_response()
            }
            PageError::Status(status, sentence) => {
                let title = status.canonical_reason().unwrap_or("Error");
                (status, layout::html(layout::error_page(title, &sentence))).into_response()
            }
        }
    }
}
