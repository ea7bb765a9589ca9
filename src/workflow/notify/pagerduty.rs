//! PagerDuty Events API v2: a `trigger` when an incident escalates, a `resolve` when it is
//! remediated or resolved afterwards, both under one stable `dedup_key` per incident (so a
//! repeated trigger does not page twice).

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::view::View;
use super::SendError;

/// The incident's deduplication key: the same for every event of the incident, and naming its
/// target so that a page is recognisable by it (an incident routed to no target, and one opened
/// before targets existed, keep the plain form).
pub fn dedup_key(target: Option<&str>, incident_id: i64) -> String {
    match target {
        Some(t) => format!("backup-remediator-{t}-{incident_id}"),
        None => format!("backup-remediator-{incident_id}"),
    }
}

/// PagerDuty's severities; the alert's `severity` label when it is one of them.
pub fn severity(label: &str) -> &'static str {
    match label.to_ascii_lowercase().as_str() {
        "critical" | "page" => "critical",
        "warning" | "warn" => "warning",
        "info" | "none" => "info",
        _ => "error",
    }
}

/// The `trigger` event, without the routing key (added when sending).
pub fn trigger(v: &View<'_>) -> Value {
    let i = v.incident;
    let summary = format!(
        "PostgreSQL backup of {} failing: {} — last good backup {}",
        v.target_words(),
        v.scenario_words(),
        v.rpo_words()
    );
    let mut links = Vec::new();
    if let Some(url) = v.incident_url() {
        links.push(json!({ "href": url, "text": format!("Incident #{}", i.id) }));
    }
    if !i.generator_url.is_empty() {
        links.push(json!({ "href": i.generator_url, "text": "Alert source" }));
    }
    json!({
        "event_action": "trigger",
        "dedup_key": dedup_key(i.target.as_deref(), i.id),
        "payload": {
            "summary": summary.chars().take(1000).collect::<String>(),
            "source": "backup-remediator",
            "severity": severity(&i.severity),
            "component": "postgres-backup",
            "group": i.target.as_deref()
                .or_else(|| i.labels.get("namespace").and_then(Value::as_str))
                .unwrap_or("postgres"),
            "class": v.diagnosis.map_or("unknown", |d| d.scenario.as_str()),
            "custom_details": {
                "incident": i.id,
                "target": i.target,
                "alertname": i.alertname,
                "diagnosis": v.diagnosis.map(|d| d.summary.clone()),
                "evidence": v.evidence_lines(),
                "escalation": v.escalation_reason(),
                "last_good_backup": v.last_good_backup,
                "rpo_impact_seconds": v.rpo_impact_seconds(),
                "rpo_target_hours": v.rpo_hours,
            }
        },
        "links": links,
    })
}

/// The `resolve` event.
pub fn resolve(target: Option<&str>, incident_id: i64) -> Value {
    json!({ "event_action": "resolve", "dedup_key": dedup_key(target, incident_id) })
}

/// Sends an event, adding the routing key.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    routing_key: &str,
    event: &Value,
) -> Result<(), SendError> {
    let mut body = event.clone();
    body["routing_key"] = json!(routing_key);
    let resp = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(SendError::transport)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    let error = format!("HTTP {status}");
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(SendError::Retry { error, after })
    } else {
        Err(SendError::Permanent(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_the_alert_label_and_defaults_to_error() {
        assert_eq!(severity("critical"), "critical");
        assert_eq!(severity("Warning"), "warning");
        assert_eq!(severity("info"), "info");
        assert_eq!(severity("page"), "critical");
        assert_eq!(severity(""), "error");
        assert_eq!(severity("major"), "error");
    }

    #[test]
    fn the_dedup_key_is_the_same_for_every_event_of_an_incident() {
        assert_eq!(dedup_key(None, 42), "backup-remediator-42");
        assert_eq!(resolve(None, 42)["dedup_key"], "backup-remediator-42");
        assert_eq!(
            resolve(Some("billing"), 42)["dedup_key"],
            "backup-remediator-billing-42"
        );
        assert_eq!(resolve(None, 42)["event_action"], "resolve");
    }
}
