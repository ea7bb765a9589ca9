//! `/ui/incidents` (the list: status, target, scenario, age; filters and paging) and
//! `/ui/incidents/{id}` (what happened in sentences, the evidence, the RPO impact, the plan as
//! a checklist with the gate's decisions and the approvals, the timeline, links to Prometheus
//! and Alertmanager). Both read through the API's own read paths.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{ago, html, page, time, web_link, Section};
use super::timeline::sentence;
use super::{PageError, Viewer};
use crate::api::extract::Page;
use crate::api::incidents::{read_detail, read_list, target_name, IncidentDetail};
use crate::api::AppState;
use crate::domain::diagnosis::Diagnosis;
use crate::domain::duration::measured;
use crate::domain::escalation::last_good_backup;
use crate::domain::incident::{Incident, IncidentStatus};
use crate::domain::plan::{Step, StepState};
use crate::store::IncidentFilter;
use crate::workflow::notify::view::View;

/// Largest page of the list.
const MAX_LIMIT: u32 = 200;

/// The list's query: every filter optional, an empty one is no filter (as a form sends it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    alertname: String,
    cursor: Option<String>,
    limit: Option<u32>,
}

fn bad(sentence: String) -> PageError {
    PageError::status(StatusCode::BAD_REQUEST, sentence)
}

impl ListQuery {
    /// The store's filter, or a 400 naming the filter at fault.
    fn filter(&self) -> Result<(IncidentFilter, Page), PageError> {
        let page = Page::new(self.limit, self.cursor.as_deref(), MAX_LIMIT)
            .map_err(|e| bad(format!("Paging: {e}.")))?;
        let status = match self.status.trim() {
            "" => None,
            s => Some(s.parse::<IncidentStatus>().map_err(|_| {
                bad(format!(
                    "status: {s:?} is not a status (open, resolved, escalated or remediated)."
                ))
            })?),
        };
        let target = match self.target.trim() {
            "" => None,
            t if target_name(t) => Some(t.to_owned()),
            t => {
                return Err(bad(format!(
                "target: {t:?} is not a target name (1 to 63 lowercase letters, digits or dashes)."
            )))
            }
        };
        let alertname = match self.alertname.trim() {
            "" => None,
            a if a.chars().count() <= 200 && !a.chars().any(char::is_control) => Some(a.to_owned()),
            _ => {
                return Err(bad(
                    "alertname: at most 200 printable characters.".to_owned()
                ))
            }
        };
        let filter = IncidentFilter {
            status,
            target,
            alertname,
            before_id: page.before,
            limit: page.fetch(),
            ..Default::default()
        };
        Ok((filter, page))
    }

    /// This query's link to the page after `cursor`.
    fn link(&self, cursor: Option<&str>) -> String {
        let mut q = url_query(&[
            ("status", self.status.trim()),
            ("target", self.target.trim()),
            ("alertname", self.alertname.trim()),
        ]);
        if let Some(c) = cursor {
            q.push_str(&format!(
                "{}cursor={c}",
                if q.is_empty() { "" } else { "&" }
            ));
        }
        format!("/ui/incidents{}{q}", if q.is_empty() { "" } else { "?" })
    }
}

/// `a=1&b=2` of the non-empty pairs, percent-encoded.
fn url_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let v = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn scenario_words(d: Option<&Diagnosis>) -> String {
    match d {
        Some(d) => match d.scenario.number() {
            Some(n) => format!("{n}: {}", d.scenario.title()),
            None => d.scenario.title().to_owned(),
        },
        None => "not diagnosed".to_owned(),
    }
}

/// The incident list.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Query(q) =
        query.map_err(|e| bad(format!("The filters could not be read: {}", e.body_text())))?;
    let (filter, page) = q.filter()?;
    let mut incidents = read_list(&state, &filter).await?;
    let next = page.next_cursor(&mut incidents, |i| i.id);
    let diagnoses =
        futures_util::future::try_join_all(incidents.iter().map(|i| state.store.diagnosis(i.id)))
            .await
            .map_err(crate::api::ApiError::from)?;
    let now = Utc::now();
    let statuses = ["open", "escalated", "remediated", "resolved"];
    let body = html! {
        h1 { "Incidents" }
        form.filters method="get" action="/ui/incidents" {
            label { "Status "
                select name="status" {
                    option value="" selected[q.status.is_empty()] { "any" }
                    @for s in statuses {
                        option value=(s) selected[q.status == s] { (s) }
                    }
                }
            }
            label { "Target "
                select name="target" {
                    option value="" selected[q.target.is_empty()] { "any" }
                    @for t in &state.targets {
                        option value=(t) selected[&q.target == t] { (t) }
                    }
                }
            }
            label { "Alert name "
                input type="text" name="alertname" value=(q.alertname) placeholder="e.g. PostgreSQLBackupFailed";
            }
            button type="submit" { "Filter" }
        }
        @if incidents.is_empty() {
            p { "No incident matches." }
        } @else {
            table.list {
                caption { "Newest first" }
                thead { tr { th scope="col" { "#" } th scope="col" { "Status" } th scope="col" { "Target" } th scope="col" { "Scenario" } th scope="col" { "Alert" } th scope="col" { "Opened" } } }
                tbody {
                    @for (i, d) in incidents.iter().zip(&diagnoses) {
                        tr {
                            td { a href=(format!("/ui/incidents/{}", i.id)) { "#" (i.id) } }
                            td { span class=(format!("status {}", i.status)) { (i.status) } }
                            td { (i.target.as_deref().unwrap_or("no target")) }
                            td { (scenario_words(d.as_ref())) }
                            td { (i.alertname) }
                            td { (ago(i.opened_at, now)) }
                        }
                    }
                }
            }
        }
        nav.paging aria-label="Pages" {
            @if page.before.is_some() { a href=(q.link(None)) { "Newest" } }
            @if let Some(c) = &next { a href=(q.link(Some(c))) rel="next" { "Older" } }
        }
    };
    Ok(html(page_of("Incidents", &viewer, body)))
}

/// `s` ending with a full stop (once).
fn sentence_end(s: &str) -> String {
    let s = s.trim_end();
    if s.ends_with(['.', '!', '?']) {
        s.to_owned()
    } else {
        format!("{s}.")
    }
}

fn page_of(title: &str, viewer: &Viewer, body: Markup) -> Markup {
    page(title, Section::Incidents, Some(viewer), body)
}

/// `?decided=STEP` after a decision made from the page.
#[derive(Debug, Default, Deserialize)]
pub struct ShowQuery {
    decided: Option<i64>,
}

/// One incident.
pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, PageError> {
    let Path(id) = id.map_err(|_| bad("The incident id must be a whole number.".into()))?;
    let decided = query.map(|q| q.0.decided).unwrap_or_default();
    let Some(d) = read_detail(&state, id).await? else {
        return Err(PageError::status(
            StatusCode::NOT_FOUND,
            format!("There is no incident #{id}."),
        ));
    };
    let body = detail(&state, &viewer, &d, decided);
    Ok(html(page_of(&format!("Incident #{id}"), &viewer, body)))
}

/// Who decided a step, from the timeline: (by, role, on behalf of, comment).
fn decision_of(d: &IncidentDetail, step: i64) -> Option<&Value> {
    d.timeline
        .iter()
        .rev()
        .find(|e| {
            (e.kind == "approved" || e.kind == "rejected")
                && e.detail.get("step").and_then(Value::as_i64) == Some(step)
        })
        .map(|e| &e.detail)
}

fn mark(state: StepState) -> &'static str {
    match state {
        StepState::Succeeded => "✔",
        StepState::Failed | StepState::Refused | StepState::Rejected | StepState::Interrupted => {
            "✘"
        }
        StepState::Skipped | StepState::DryRun => "–",
        _ => "☐",
    }
}

fn detail(state: &AppState, viewer: &Viewer, d: &IncidentDetail, decided: Option<i64>) -> Markup {
    let i: &Incident = &d.incident;
    let now = Utc::now();
    let view = View {
        incident: i,
        diagnosis: d.diagnosis.as_ref(),
        steps: &d.actions,
        timeline: &d.timeline,
        last_good_backup: last_good_backup(&d.findings),
        now,
        external_url: "",
        rpo_hours: state.pages.rpo_hours,
        buttons: false,
    };
    let alertmanager = d
        .timeline
        .iter()
        .find(|e| e.kind == "opened")
        .and_then(|e| e.detail.get("external_url"))
        .and_then(Value::as_str)
        .and_then(web_link);
    let waiting = d
        .actions
        .iter()
        .any(|s| s.state == StepState::WaitingApproval);
    html! {
        h1 { "Incident #" (i.id) ": " (view.target_words()) " backup failed" }
        @if let Some(step) = decided {
            p.notice role="status" { "Your decision on step " (step) " was recorded; the plan below shows where it stands." }
        }
        p.lead { span class=(format!("status {}", i.status)) { (i.status) } " " (view.status_words()) " — " (view.scenario_words()) }
        dl.facts {
            dt { "Alert" } dd { (i.alertname) " (" (i.severity) ")" }
            dt { "Target" } dd { (view.target_words()) }
            dt { "Opened" } dd { (time(i.opened_at)) " (" (ago(i.opened_at, now)) ")" }
            dt { "Alert started" } dd { (time(i.starts_at)) }
            dt { "Last sent by Alertmanager" } dd { (time(i.last_seen_at)) ", re-sent " (i.renotified_count) " times" }
            @if let Some(r) = i.resolved_at { dt { "Closed" } dd { (time(r)) } }
            dt { "Last good backup" } dd { (view.rpo_words()) }
        }
        ul.links {
            @if let Some(g) = web_link(&i.generator_url) { li { a href=(g) { "The alert's graph in Prometheus" } } }
            @if let Some(a) = alertmanager { li { a href=(a) { "Alertmanager" } } }
            li { a href=(format!("/api/v1/incidents/{}", i.id)) { "This incident as JSON (API)" } }
        }
        section aria-labelledby="what" {
            h2 id="what" { "What happened" }
            @match &d.diagnosis {
                Some(dg) => {
                    p.diagnosis { (sentence_end(&dg.summary)) }
                    p { "Confidence: " strong { (format!("{:.0} %", dg.confidence * 100.0)) } }
                    @if !dg.evidence.is_empty() {
                        h3 { "Evidence that decided it" }
                        ul { @for e in &dg.evidence { li { strong { (e.probe) } " (" (if e.kind == "log" { "backup log" } else { e.kind.as_str() }) "): " (e.text) } } }
                    }
                    @if !dg.also.is_empty() {
                        p { "Also found: " (dg.also.iter().map(|s| s.title()).collect::<Vec<_>>().join(", ")) }
                    }
                    @if !dg.context.is_empty() {
                        ul { @for c in &dg.context { li { (c) } } }
                    }
                }
                None => p { "Not diagnosed yet: the probes have not all answered." }
            }
            @if let Some(why) = view.escalation_reason() {
                p.escalated { "Escalated: " (why) }
            }
        }
        section aria-labelledby="probes" {
            h2 id="probes" { "What each probe found" }
            @if d.findings.is_empty() {
                p { "No probe has answered yet." }
            } @else {
                table.list {
                    thead { tr { th scope="col" { "Probe" } th scope="col" { "Status" } th scope="col" { "Took" } th scope="col" { "Finding" } } }
                    tbody {
                        @for f in &d.findings {
                            tr {
                                td { (f.probe) }
                                td { span class=(format!("probe {}", f.status)) { (f.status) } }
                                td.num { (measured(f.duration_ms as f64 / 1000.0)) }
                                td { (f.summary) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="plan" {
            h2 id="plan" { "The plan" }
            @if d.actions.is_empty() {
                p { "No plan yet." }
            } @else {
                @if waiting && !viewer.can_decide() {
                    p.note { "A step waits for an approval: an admin can approve or reject it here." }
                }
                ol.plan {
                    @for s in &d.actions { (step_item(viewer, d, s)) }
                }
            }
        }
        section aria-labelledby="timeline" {
            h2 id="timeline" { "Timeline" }
            ol.timeline {
                @for e in &d.timeline {
                    li { time datetime=(e.at.to_rfc3339()) { (e.at.format("%Y-%m-%d %H:%M:%S")) } " " (sentence(&e.kind, &e.detail)) }
                }
            }
        }
    }
}

fn step_item(viewer: &Viewer, d: &IncidentDetail, s: &Step) -> Markup {
    let id = d.incident.id;
    let decision = decision_of(d, s.id);
    let field = |k: &str| {
        decision
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    html! {
        li id=(format!("step-{}", s.id)) class=(format!("step {}", s.state)) {
            span.mark aria-hidden="true" { (mark(s.state)) }
            " " strong { (s.kind) " " code { (s.name) } } " on " code { (s.target) }
            ": " span.state { (s.state.as_str().replace('_', " ")) }
            div.why { "Policy: " (s.decision.as_str().replace('_', " ")) ". " (s.reason) }
            @if let Some(by) = s.decided_by.as_deref() {
                div.decided {
                    (if s.state == StepState::Rejected { "Rejected" } else { "Approved" }) " by " strong { (by) }
                    @if let Some(role) = field("role") { " (" (role) ")" }
                    @if let Some(who) = field("on_behalf_of") { " on behalf of " strong { (who) } }
                    @if let Some(at) = s.decided_at { " at " (time(at)) }
                    @if let Some(c) = field("comment") { ": “" (c) "”" }
                }
            }
            @if let (Some(a), Some(b)) = (s.started_at, s.finished_at) {
                div.took { "Ran " (time(a)) ", took " (measured((b - a).num_milliseconds() as f64 / 1000.0)) }
            }
            @if s.state == StepState::WaitingApproval && viewer.can_decide() {
                div.buttons {
                    a.button.approve href=(format!("/ui/incidents/{id}/actions/{}/approve", s.id)) { "Approve " (s.name) "…" }
                    form.inline method="post" action=(format!("/ui/incidents/{id}/actions/{}/reject", s.id)) {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label for=(format!("reject-comment-{}", s.id)) { "Why (optional)" }
                        input id=(format!("reject-comment-{}", s.id)) type="text" name="comment" maxlength="500";
                        button.reject type="submit" { "Reject " (s.name) }
                    }
                }
            }
        }
    }
}
