//! The frame every page shares (title, navigation, who is signed in, sign-out), the error page,
//! and the few ways a page writes a time or a link.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::{Via, Viewer};
use crate::domain::duration::human;

/// `markup` as an HTML answer.
pub fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Incidents,
    RestoreTests,
    Backups,
    None,
}

/// A whole page: `title`, the navigation (with `current` marked), who reads it, and `body`.
pub fn page(title: &str, current: Section, viewer: Option<&Viewer>, body: Markup) -> Markup {
    let nav = [
        (Section::Incidents, "/ui/incidents", "Incidents"),
        (Section::RestoreTests, "/ui/restore-tests", "Restore tests"),
        (Section::Backups, "/ui/backups", "Manual backups"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · backup-remediator" }
                link rel="stylesheet" href="/ui/static/ui.css";
            }
            body {
                header.top {
                    a.brand href="/ui/incidents" { "backup-remediator" }
                    @if viewer.is_some() {
                        nav aria-label="Sections" {
                            ul {
                                @for (section, href, label) in nav {
                                    li {
                                        @if section == current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(v) = viewer {
                        div.who {
                            @match v.via {
                                Via::Anonymous => span { "Not signed in (read-only: --insecure-no-auth)" },
                                Via::Proxy => span { "Signed in as " strong { (v.name) } " (" (v.role.as_str()) ", through the proxy)" },
                                Via::Session => {
                                    span { "Signed in as " strong { (v.name) } " (" (v.role.as_str()) ")" }
                                    form.inline method="post" action="/ui/sign-out" {
                                        input type="hidden" name="csrf" value=(v.csrf);
                                        button type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                }
                main id="main" {
                    (body)
                }
            }
        }
    }
}

/// The page of an error: what went wrong, in a sentence, and the way back.
pub fn error_page(title: &str, sentence: &str) -> Markup {
    page(
        title,
        Section::None,
        None,
        html! {
            h1 { (title) }
            p.error { (sentence) }
            p { a href="/ui/incidents" { "Back to the incidents" } }
        },
    )
}

/// A time as people on call read it: `2026-11-24 02:30:00 UTC`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time element: the time, and how long ago it was.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(time(t)) { (human((now - t).num_seconds())) " ago" }
    }
}

/// `url` when it is an http(s) link a page may show (never `javascript:` or the like).
pub fn web_link(url: &str) -> Option<&str> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then_some(url.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_links_are_shown() {
        assert_eq!(
            web_link(" https://prom:9090/graph "),
            Some("https://prom:9090/graph")
        );
        assert_eq!(web_link("javascript:alert(1)"), None);
        assert_eq!(web_link(""), None);
    }

    #[test]
    fn text_is_escaped_by_the_templates() {
        let p = error_page("Not Found", "<script>alert(1)</script>").into_string();
        assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{p}");
        assert!(!p.contains("<script>"));
    }
}
