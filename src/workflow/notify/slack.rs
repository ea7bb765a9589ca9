//! Slack: the Block Kit message of an incident (pure) and its delivery through the Web API
//! (`chat.postMessage`, then `chat.update` of the same message) or an incoming webhook.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::view::View;
use super::SendError;

/// Slack's limit on a header's text.
const HEADER_MAX: usize = 150;
/// Slack's limit on a section's text (3000), with room to spare.
const SECTION_MAX: usize = 2900;

/// Escapes the three characters Slack's mrkdwn treats as control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn section(text: String) -> Value {
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": clip(&text, SECTION_MAX) } })
}

fn bullets(title: &str, lines: &[String]) -> String {
    let mut s = format!("*{title}*");
    for l in lines {
        s.push_str("\n• ");
        s.push_str(l);
    }
    s
}

/// The message of an incident: `{ "text": fallback, "blocks": [...] }`.
pub fn render(v: &View<'_>) -> Value {
    let header = clip(&v.headline(), HEADER_MAX);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": header, "emoji": true }
    })];
    let i = v.incident;
    let mut fields = vec![
        json!({ "type": "mrkdwn", "text": format!("*Target*\n{}", escape(&v.target_words())) }),
        json!({ "type": "mrkdwn", "text": format!("*Status*\n{}", v.status_words()) }),
        json!({ "type": "mrkdwn", "text": format!("*Scenario*\n{}", escape(&v.scenario_words())) }),
        json!({ "type": "mrkdwn", "text": format!("*Alert*\n{} ({})", escape(&i.alertname), escape(&i.severity)) }),
        json!({ "type": "mrkdwn", "text": format!("*Last good backup*\n{}", escape(&v.rpo_words())) }),
    ];
    if let Some(d) = v.diagnosis {
        fields.push(json!({ "type": "mrkdwn",
            "text": format!("*Confidence*\n{:.0} %", d.confidence * 100.0) }));
    }
    blocks.push(json!({ "type": "section", "fields": fields }));
    let evidence: Vec<String> = v.evidence_lines().iter().map(|l| escape(l)).collect();
    if !evidence.is_empty() {
        blocks.push(section(bullets("Evidence", &evidence)));
    }
    let done: Vec<String> = v.done_lines().iter().map(|l| escape(l)).collect();
    if !done.is_empty() {
        blocks.push(section(bullets("Done automatically", &done)));
    }
    let person = v.person_lines(escape);
    if !person.is_empty() {
        blocks.push(section(bullets("Needs a person", &person)));
    }
    if v.buttons {
        blocks.extend(approval_buttons(v));
    }
    let mut links = Vec::new();
    if let Some(url) = v.incident_url() {
        links.push(format!("<{url}|Incident #{}>", i.id));
    }
    if !i.generator_url.is_empty() {
        links.push(format!("<{}|Alert source>", i.generator_url));
    }
    links.push(format!(
        "opened {}",
        i.opened_at.format("%Y-%m-%d %H:%M UTC")
    ));
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": links.join(" · ") }]
    }));
    json!({ "text": v.fallback(), "blocks": blocks })
}

/// The `action_id`s of the buttons; `POST /slack/interactions` reads them back.
pub const APPROVE_ACTION: &str = "approve_step";
pub const REJECT_ACTION: &str = "reject_step";

/// The button value naming a step: `"{incident_id}:{step_id}"`.
pub fn step_value(incident_id: i64, step_id: i64) -> String {
    format!("{incident_id}:{step_id}")
}

/// One actions block per step waiting for a person: Approve (with a confirmation, as the step
/// changes production) and Reject.
fn approval_buttons(v: &View<'_>) -> Vec<Value> {
    v.waiting_approvals()
        .map(|(_, s)| s)
        .take(10)
        .map(|s| {
            let value = step_value(v.incident.id, s.id);
            let label = clip(&format!("{} on {}", s.name, s.target), 75);
            json!({
                "type": "actions",
                "block_id": format!("approval:{}", s.id),
                "elements": [
                    {
                        "type": "button", "action_id": APPROVE_ACTION, "style": "primary",
                        "text": { "type": "plain_text", "text": "Approve" },
                        "value": value,
                        "confirm": {
                            "title": { "type": "plain_text", "text": "Approve this step?" },
                            "text": { "type": "plain_text",
                                      "text": format!("Run {label} (through the action gate)") },
                            "confirm": { "type": "plain_text", "text": "Approve" },
                            "deny": { "type": "plain_text", "text": "Cancel" }
                        }
                    },
                    {
                        "type": "button", "action_id": REJECT_ACTION, "style": "danger",
                        "text": { "type": "plain_text", "text": "Reject" },
                        "value": value
                    }
                ]
            })
        })
        .collect()
}

/// What a Web API call answered.
#[derive(Debug, serde::Deserialize)]
struct ApiAnswer {
    ok: bool,
    #[serde(default)]
    error: String,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    channel: String,
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Sorts an HTTP status into retry (429, 5xx, 408) or not.
fn status_error(status: StatusCode, after: Option<Duration>) -> SendError {
    let error = format!("HTTP {status}");
    if status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
    {
        SendError::Retry { error, after }
    } else {
        SendError::Permanent(error)
    }
}

/// Posts the message, or updates `existing` (channel, ts) in place. Returns the message's
/// (channel, ts).
pub async fn send_api(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
    channel: &str,
    existing: Option<&(String, String)>,
    message: &Value,
) -> Result<(String, String), SendError> {
    let mut body = message.clone();
    let method = match existing {
        Some((ch, ts)) => {
            body["channel"] = json!(ch);
            body["ts"] = json!(ts);
            "chat.update"
        }
        None => {
            body["channel"] = json!(channel);
            "chat.postMessage"
        }
    };
    let url = format!("{}/{method}", api_url.trim_end_matches('/'));
    let resp = http
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(SendError::transport)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(status_error(status, retry_after(&resp)));
    }
    let after = retry_after(&resp);
    let answer: ApiAnswer = resp.json().await.map_err(SendError::transport)?;
    if answer.ok {
        let ch = if answer.channel.is_empty() {
            existing.map_or(channel.to_owned(), |(c, _)| c.clone())
        } else {
            answer.channel
        };
        let ts = if answer.ts.is_empty() {
            existing.map(|(_, t)| t.clone()).unwrap_or_default()
        } else {
            answer.ts
        };
        return Ok((ch, ts));
    }
    if existing.is_some()
        && ["message_not_found", "cant_update_message"].contains(&answer.error.as_str())
    {
        return Err(SendError::Gone(format!("{method}: {}", answer.error)));
    }
    Err(SendError::Retry {
        error: format!("{method}: ok=false, error={}", answer.error),
        after,
    })
}

/// Posts a new message through an incoming webhook.
pub async fn send_webhook(
    http: &reqwest::Client,
    url: &str,
    message: &Value,
) -> Result<(), SendError> {
    let resp = http
        .post(url)
        .json(message)
        .send()
        .await
        .map_err(SendError::transport)?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(status_error(status, retry_after(&resp)))
    }
}
