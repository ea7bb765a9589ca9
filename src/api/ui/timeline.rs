//! An incident's timeline as sentences a person reads, not JSON: one line per event, in the
//! words of the kind of event, from the fields its detail holds. Pure.

use serde_json::Value;

use crate::domain::duration::measured;

fn text<'a>(d: &'a Value, key: &str) -> Option<&'a str> {
    d.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A scalar value in words (strings as they are, numbers, yes/no).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "yes" } else { "no" }.to_owned()),
        _ => None,
    }
}

/// `step_refused` → "Step refused".
fn kind_words(kind: &str) -> String {
    let spaced = kind.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// "restart_primary on statefulset/ns/pg" (what a step event is about).
fn step_words(d: &Value) -> String {
    let name = text(d, "name").unwrap_or("a step");
    match text(d, "target") {
        Some(t) => format!("{name} on {t}"),
        None => name.to_owned(),
    }
}

/// The sentence of one timeline event.
pub fn sentence(kind: &str, d: &Value) -> String {
    let reason = text(d, "reason")
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match kind {
        "opened" => {
            let mut s = "The alert arrived from Alertmanager".to_owned();
            if let Some(r) = text(d, "receiver") {
                s.push_str(&format!(" (receiver {r})"));
            }
            s.push_str("; incident opened");
            if let Some(adj) = d.get("adjustments").and_then(Value::as_array) {
                let adj: Vec<String> = adj.iter().filter_map(scalar).collect();
                if !adj.is_empty() {
                    s.push_str(&format!(" (stored with changes: {})", adj.join("; ")));
                }
            }
            s
        }
        "probes_started" => {
            let names: Vec<String> = d
                .get("probes")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(scalar).collect())
                .unwrap_or_default();
            let mut s = format!("Probes started: {}", names.join(", "));
            if let Some(ms) = d.get("deadline_ms").and_then(Value::as_f64) {
                s.push_str(&format!(" (deadline {})", measured(ms / 1000.0)));
            }
            s
        }
        "probe_finished" => {
            let probe = text(d, "probe").unwrap_or("a probe");
            let status = text(d, "status").unwrap_or("finished");
            let mut s = format!("Probe {probe}: {status}");
            if let Some(ms) = d.get("duration_ms").and_then(Value::as_f64) {
                s.push_str(&format!(" in {}", measured(ms / 1000.0)));
            }
            if let Some(summary) = text(d, "summary") {
                s.push_str(&format!(" — {summary}"));
            }
            s
        }
        "diagnosed" => {
            let summary = text(d, "summary").unwrap_or("a scenario was chosen");
            match d.get("confidence").and_then(Value::as_f64) {
                Some(c) => format!("Diagnosed (confidence {:.0} %): {summary}", c * 100.0),
                None => format!("Diagnosed: {summary}"),
            }
        }
        "planned" => {
            let n = d.get("steps").and_then(Value::as_array).map_or(0, Vec::len);
            let mut s = format!("Plan made: {n} step{}", if n == 1 { "" } else { "s" });
            if let Some(p) = text(d, "policy") {
                s.push_str(&format!(" under policy {p}"));
            }
            if d.get("dry_run").and_then(Value::as_bool) == Some(true) {
                s.push_str(" (dry run: nothing is changed)");
            }
            s
        }
        "approval_requested" => format!("{} waits for a person's approval", step_words(d)),
        "approved" | "rejected" => {
            let mut s = format!("{} {kind}", step_words(d));
            if let Some(by) = text(d, "by") {
                s.push_str(&format!(" by {by}"));
                if let Some(role) = text(d, "role") {
                    s.push_str(&format!(" ({role})"));
                }
            }
            if let Some(who) = text(d, "on_behalf_of") {
                s.push_str(&format!(" on behalf of {who}"));
            }
            if let Some(c) = text(d, "comment") {
                s.push_str(&format!(": “{c}”"));
            }
            s
        }
        "escalated" => format!("Escalated to people{reason}"),
        "resolved" => format!("Resolved{reason}"),
        "remediated" => {
            let mut s = "Remediated: a new backup verified the fix".to_owned();
            if let Some(step) = d.get("verified_by_step").and_then(Value::as_i64) {
                s.push_str(&format!(" (step {step})"));
            }
            s
        }
        k if k.starts_with("step_") => {
            let state = text(d, "state")
                .map(|s| s.replace('_', " "))
                .unwrap_or_else(|| k.trim_start_matches("step_").replace('_', " "));
            format!("{}: {state}{reason}", step_words(d))
        }
        _ => generic(kind, d),
    }
}

/// Any other event: its kind in words, then its reason or summary, or else its plain fields.
fn generic(kind: &str, d: &Value) -> String {
    let mut s = kind_words(kind);
    if let Some(r) = text(d, "reason").or_else(|| text(d, "summary")) {
        s.push_str(&format!(": {r}"));
        return s;
    }
    let fields: Vec<String> = d
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| scalar(v).map(|v| format!("{} {v}", k.replace('_', " "))))
                .take(5)
                .collect()
        })
        .unwrap_or_default();
    if !fields.is_empty() {
        s.push_str(&format!(" ({})", fields.join(", ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_kind_of_event_reads_as_a_sentence() {
        assert_eq!(
            sentence(
                "probe_finished",
                &json!({"probe": "database", "status": "problem",
                "summary": "connection refused", "duration_ms": 60})
            ),
            "Probe database: problem in 0.060 s — connection refused"
        );
        assert_eq!(
            sentence(
                "diagnosed",
                &json!({"scenario": "database_connection", "confidence": 0.95,
                "summary": "Scenario 1 (database connection): refused"})
            ),
            "Diagnosed (confidence 95 %): Scenario 1 (database connection): refused"
        );
        assert_eq!(
            sentence(
                "planned",
                &json!({"dry_run": true, "policy": "built-in", "steps": [{}, {}]})
            ),
            "Plan made: 2 steps under policy built-in (dry run: nothing is changed)"
        );
        assert_eq!(
            sentence("approved", &json!({"name": "restart_primary", "target": "statefulset/ns/pg",
                "by": "admin", "role": "admin", "on_behalf_of": "dba@example.com", "comment": "ok"})),
            "restart_primary on statefulset/ns/pg approved by admin (admin) on behalf of dba@example.com: “ok”"
        );
        assert_eq!(
            sentence(
                "step_refused",
                &json!({"name": "expand_pvc", "target": "pvc/ns/data",
                "state": "refused", "reason": "cooldown: started 5 min ago"})
            ),
            "expand_pvc on pvc/ns/data: refused: cooldown: started 5 min ago"
        );
        assert_eq!(
            sentence(
                "escalated",
                &json!({"reason": "S3 access denied", "rule": "plan"})
            ),
            "Escalated to people: S3 access denied"
        );
        assert_eq!(
            sentence("flapping_breaker", &json!({"incidents": 3, "threshold": 3})),
            "Flapping breaker (incidents 3, threshold 3)"
        );
    }

    #[test]
    fn no_event_reads_as_json() {
        let s = sentence(
            "opened",
            &json!({"receiver": "br", "external_url": "http://am:9093",
            "adjustments": ["startsAt was in the future"]}),
        );
        assert_eq!(
            s,
            "The alert arrived from Alertmanager (receiver br); incident opened (stored with changes: startsAt was in the future)"
        );
        assert!(!sentence("anything", &json!({"nested": {"a": 1}})).contains('{'));
    }
}
