//! `/ui/restore-tests` (per database: the result, its checks, the restore time against the
//! RTO) and `/ui/backups` (manual backups), newest first, paged. They read the same store
//! queries as `GET /api/v1/restore-tests` and `/api/v1/backups`.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::html;

use super::layout::{ago, html, page, Section};
use super::{PageError, Viewer};
use crate::api::extract::PageParams;
use crate::api::AppState;
use crate::domain::duration::measured;
use crate::domain::restore_test::RestoreTest;

fn paging(
    query: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(PageParams, crate::api::extract::Page), PageError> {
    let bad = |s: String| PageError::status(StatusCode::BAD_REQUEST, s);
    let Query(p) =
        query.map_err(|e| bad(format!("The query could not be read: {}", e.body_text())))?;
    let page = p.page().map_err(|e| bad(format!("Paging: {e}.")))?;
    Ok((p, page))
}

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "–".to_owned(), |ms| measured(ms as f64 / 1000.0))
}

/// The restore tests.
pub async fn restore_tests(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let (_, paged) = paging(query)?;
    let mut tests = state
        .store
        .list_restore_tests(paged.before, i64::from(paged.fetch()))
        .await
        .map_err(crate::api::ApiError::from)?;
    let next = paged.next_cursor(&mut tests, |t| t.id);
    // The newest test of each database on this page, for the summary.
    let mut latest: Vec<&RestoreTest> = Vec::new();
    for t in &tests {
        if !latest
            .iter()
            .any(|l| l.database == t.database && l.target == t.target)
        {
            latest.push(t);
        }
    }
    let now = Utc::now();
    let body = html! {
        h1 { "Restore tests" }
        p { "Each test downloads a backup, decrypts it, restores it into a scratch database, runs the configured checks and drops it (the runbook's weekly restore test)." }
        @if tests.is_empty() {
            p { "No restore test yet." }
        } @else {
            h2 { "Latest per database" }
            table.list {
                thead { tr { th scope="col" { "Target" } th scope="col" { "Database" } th scope="col" { "Result" } th scope="col" { "Checks" } th scope="col" { "Restore time against the RTO" } th scope="col" { "When" } } }
                tbody {
                    @for t in &latest {
                        tr {
                            td { (t.target.as_deref().unwrap_or("–")) }
                            td { (t.database) }
                            td { span class=(format!("status {}", t.result.status)) { (t.result.status) } }
                            td { (t.result.checks.iter().filter(|c| c.passed).count()) " of " (t.result.checks.len()) " passed" }
                            td { (rto_words(t)) }
                            td { (ago(t.started_at, now)) }
                        }
                    }
                }
            }
            h2 { "Every test, newest first" }
            @for t in &tests {
                article.test id=(format!("test-{}", t.id)) {
                    h3 { "#" (t.id) " " (t.database) @if let Some(target) = &t.target { " (" (target) ")" } ": " span class=(format!("status {}", t.result.status)) { (t.result.status) } }
                    p { "Started " (ago(t.started_at, now)) " by " (t.actor) " (" (t.trigger) "), took " (ms(t.result.duration_ms)) "." }
                    @if let Some(r) = &t.result.reason { p.error { (r) } }
                    @if let Some(k) = &t.result.object_key { p { "Backup: " code { (k) } } }
                    p { "Restored " (t.result.tables_restored.unwrap_or(0)) " of " (t.result.tables_expected.unwrap_or(0)) " tables, " (t.result.rows_restored.unwrap_or(0)) " rows. " (rto_words(t)) "." }
                    @if let Some(i) = t.incident_id { p { "Opened " a href=(format!("/ui/incidents/{i}")) { "incident #" (i) } "." } }
                    @if !t.result.checks.is_empty() {
                        table.list {
                            caption { "Checks" }
                            thead { tr { th scope="col" { "Check" } th scope="col" { "Result" } th scope="col" { "Value or reason" } th scope="col" { "Took" } } }
                            tbody {
                                @for c in &t.result.checks {
                                    tr {
                                        td { (c.name) }
                                        td { (if c.passed { "passed" } else { "failed" }) }
                                        td { (c.value.as_deref().or(c.reason.as_deref()).unwrap_or("")) }
                                        td { (ms(Some(c.duration_ms))) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        nav.paging aria-label="Pages" {
            @if paged.before.is_some() { a href="/ui/restore-tests" { "Newest" } }
            @if let Some(c) = &next { a href=(format!("/ui/restore-tests?cursor={c}")) rel="next" { "Older" } }
        }
    };
    Ok(html(page(
        "Restore tests",
        Section::RestoreTests,
        Some(&viewer),
        body,
    )))
}

fn rto_words(t: &RestoreTest) -> String {
    match &t.result.rto {
        Some(r) => format!(
            "restore took {} against an RTO of {} min: {}",
            measured(r.restore_ms as f64 / 1000.0),
            r.rto_minutes,
            if r.met { "met" } else { "MISSED" }
        ),
        None => "no RTO set".to_owned(),
    }
}

/// The manual backups.
pub async fn backups(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let (_, paged) = paging(query)?;
    let mut backups = state
        .store
        .list_manual_backups(paged.before, i64::from(paged.fetch()))
        .await
        .map_err(crate::api::ApiError::from)?;
    let next = paged.next_cursor(&mut backups, |b| b.id);
    let now = Utc::now();
    let body = html! {
        h1 { "Manual backups" }
        p { "Backups launched by hand (the runbook's manual backup Job), through the API or the command line." }
        @if backups.is_empty() {
            p { "No manual backup yet." }
        } @else {
            table.list {
                thead { tr { th scope="col" { "#" } th scope="col" { "Status" } th scope="col" { "Job" } th scope="col" { "Databases" } th scope="col" { "Objects" } th scope="col" { "By" } th scope="col" { "Started" } } }
                tbody {
                    @for b in &backups {
                        tr {
                            td { (b.id) }
                            td { span class=(format!("status {}", b.status)) { (b.status) } @if let Some(r) = &b.reason { div.why { (r) } } }
                            td { code { (b.namespace) "/" (b.job_name) } }
                            td { (b.databases.join(", ")) }
                            td { @for k in &b.object_keys { div { code { (k) } } } }
                            td { (b.actor) " (" (b.trigger) ")" }
                            td { (ago(b.started_at, now)) }
                        }
                    }
                }
            }
        }
        nav.paging aria-label="Pages" {
            @if paged.before.is_some() { a href="/ui/backups" { "Newest" } }
            @if let Some(c) = &next { a href=(format!("/ui/backups?cursor={c}")) rel="next" { "Older" } }
        }
    };
    Ok(html(page(
        "Manual backups",
        Section::Backups,
        Some(&viewer),
        body,
    )))
}
