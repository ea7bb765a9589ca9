//! `GET /ui/sign-in` (the form), `POST /ui/sign-in` (form field `token`: a reader's or an
//! admin's token, as the API accepts them) and `POST /ui/sign-out`. Signing in sets the session
//! cookie (see [`super::session`]); the token itself is never stored, logged or echoed.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{html, page, Section};
use super::session::{set_cookie, Session};
use super::{cross_site, PageError, Viewer};
use crate::api::AppState;

/// `next` when it is one of the pages (a path under `/ui/`), else the incident list: a sign-in
/// link never sends the browser elsewhere.
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with("/ui/")
        && !next.starts_with("/ui/sign-")
        && !next.contains("//")
        && !next.contains('\\')
        && next.len() <= 2000
        && next.chars().all(|c| c.is_ascii_graphic());
    if ok {
        next
    } else {
        "/ui/incidents"
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: String,
}

fn sign_in_page(next: &str, problem: Option<&str>, proxy: bool) -> Markup {
    page(
        "Sign in",
        Section::None,
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(p) = problem {
                p.error role="alert" { (p) }
            }
            p { "Paste a reader's or an admin's API token (the one you would send as " code { "Authorization: Bearer …" } "). The token is checked and forgotten: the session cookie does not hold it." }
            form.signin method="post" action="/ui/sign-in" {
                input type="hidden" name="next" value=(next);
                label for="token" { "Token" }
                input id="token" type="password" name="token" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
            @if proxy {
                p { "Or open this page through your organisation's sign-in proxy." }
            }
        },
    )
}

/// The sign-in form.
pub async fn form(State(state): State<AppState>, Query(q): Query<Next>) -> Response {
    let next = safe_next(&q.next);
    html(sign_in_page(
        next,
        None,
        state.auth.trusted_proxy().is_some(),
    ))
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

/// Checks the token; on success sets the session cookie and goes to `next`.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<axum::Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    if cross_site(&headers) {
        return Err(PageError::status(
            StatusCode::FORBIDDEN,
            "A sign-in sent from another site is refused.".into(),
        ));
    }
    let axum::Form(form) = form.map_err(|e| {
        PageError::status(
            StatusCode::BAD_REQUEST,
            format!("The sign-in form could not be read: {}", e.body_text()),
        )
    })?;
    let next = safe_next(&form.next).to_owned();
    let proxy = state.auth.trusted_proxy().is_some();
    let token = form.token.trim();
    let Some((who, hash)) = (!token.is_empty())
        .then(|| state.auth.principal_by_token(token))
        .flatten()
    else {
        tracing::info!("pages: sign-in refused (no credential matches)");
        let page = sign_in_page(
            &next,
            Some("That is not a reader's or an admin's token of this service."),
            proxy,
        );
        return Ok((StatusCode::UNAUTHORIZED, html(page)).into_response());
    };
    let key = &state.pages.key;
    let now = chrono::Utc::now().timestamp();
    let session = Session::new(&who.name, who.role, key.binding(&hash), now);
    tracing::info!(name = %who.name, role = who.role.as_str(), "pages: signed in");
    let cookie = set_cookie(state.pages.secure_cookie, Some(&key.seal(&session)));
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Deletes the session cookie (with the form's CSRF token) and goes to the sign-in form.
pub async fn sign_out(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, PageError> {
    let csrf = form.map(|f| f.0.csrf).unwrap_or_default();
    super::check_csrf(&state, &viewer, &headers, &csrf)?;
    Ok((
        [(
            header::SET_COOKIE,
            set_cookie(state.pages.secure_cookie, None),
        )],
        Redirect::to("/ui/sign-in"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sign_in_the_browser_goes_only_to_a_page() {
        assert_eq!(safe_next("/ui/incidents/7"), "/ui/incidents/7");
        assert_eq!(
            safe_next("/ui/incidents?status=open"),
            "/ui/incidents?status=open"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/api/v1/incidents",
            "/ui/sign-in",
            "/ui/\\evil",
            "",
        ] {
            assert_eq!(safe_next(bad), "/ui/incidents", "{bad}");
        }
    }
}
