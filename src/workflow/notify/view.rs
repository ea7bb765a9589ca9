//! What a person on call must read about an incident, from the stored records: the words both
//! Slack and PagerDuty use. Pure.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::diagnosis::Diagnosis;
use crate::domain::duration::human;
use crate::domain::incident::{Incident, IncidentStatus, TimelineEvent};
use crate::domain::plan::{Decision, Step, StepKind, StepState};

/// An incident as a message sees it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub incident: &'a Incident,
    pub diagnosis: Option<&'a Diagnosis>,
    pub steps: &'a [Step],
    pub timeline: &'a [TimelineEvent],
    /// When the last successful backup finished, if known.
    pub last_good_backup: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// Base URL of this service's API as people reach it (may be empty).
    pub external_url: &'a str,
    pub rpo_hours: u64,
    /// Waiting approvals get Approve/Reject buttons (Slack approvers are configured).
    pub buttons: bool,
}

pub use crate::domain::escalation::last_good_backup;

impl View<'_> {
    pub fn status_words(&self) -> &'static str {
        match self.incident.status {
            IncidentStatus::Open if self.diagnosis.is_some() => "diagnosed, being worked",
            IncidentStatus::Open => "open",
            IncidentStatus::Escalated => "ESCALATED: needs a person",
            IncidentStatus::Remediated => "remediated (fix verified by a new backup)",
            IncidentStatus::Resolved => "resolved",
        }
    }

    pub fn scenario_words(&self) -> String {
        match self.diagnosis {
            Some(d) => match d.scenario.number() {
                Some(n) => format!("scenario {n}: {}", d.scenario.title()),
                None => d.scenario.title().to_owned(),
            },
            None => "not diagnosed".to_owned(),
        }
    }

    /// The header: status and scenario.
    pub fn headline(&self) -> String {
        let mark = match self.incident.status {
            IncidentStatus::Open => "🔎",
            IncidentStatus::Escalated => "🚨",
            IncidentStatus::Remediated => "✅",
            IncidentStatus::Resolved => "☑️",
        };
        let status = match self.incident.status {
            IncidentStatus::Open if self.diagnosis.is_some() => "Diagnosed",
            IncidentStatus::Open => "Open",
            IncidentStatus::Escalated => "Escalated",
            IncidentStatus::Remediated => "Remediated",
            IncidentStatus::Resolved => "Resolved",
        };
        format!(
            "{mark} {status}: {} backup failed — {} (#{})",
            self.target_words(),
            self.scenario_words(),
            self.incident.id
        )
    }

    /// The target's name, or that the alert named none.
    pub fn target_words(&self) -> String {
        match &self.incident.target {
            Some(t) => t.clone(),
            None => "no target".to_owned(),
        }
    }

    /// now − last good backup, in seconds.
    pub fn rpo_impact_seconds(&self) -> Option<i64> {
        self.last_good_backup.map(|t| (self.now - t).num_seconds())
    }

    /// Time since the last good backup against the RPO target.
    pub fn rpo_words(&self) -> String {
        match self.rpo_impact_seconds() {
            Some(age) => {
                let breached = age > i64::try_from(self.rpo_hours).unwrap_or(i64::MAX) * 3600;
                format!(
                    "{} ago (RPO target {} h{})",
                    human(age),
                    self.rpo_hours,
                    if breached { ": BREACHED" } else { ": within" }
                )
            }
            None => format!(
                "unknown: no successful backup on record (RPO target {} h)",
                self.rpo_hours
            ),
        }
    }

    /// 2–4 lines: the evidence that decided the diagnosis, else its summary and context.
    pub fn evidence_lines(&self) -> Vec<String> {
        let Some(d) = self.diagnosis else {
            return Vec::new();
        };
        let mut lines: Vec<String> = d
            .evidence
            .iter()
            .take(4)
            .map(|e| format!("{}: {}", e.probe, e.text))
            .collect();
        if lines.len() < 2 {
            lines.push(d.summary.clone());
        }
        for c in &d.context {
            if lines.len() >= 2 {
                break;
            }
            lines.push(c.clone());
        }
        lines.truncate(4);
        lines
    }

    /// What the service did on its own, and the result.
    pub fn done_lines(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| {
                s.kind != StepKind::Escalate
                    && matches!(s.decision, Decision::Auto | Decision::Approve)
                    && !matches!(
                        s.state,
                        StepState::Planned | StepState::WaitingApproval | StepState::Skipped
                    )
            })
            .map(|s| {
                let mut l = format!("{} `{}` on {}: {}", s.kind, s.name, s.target, s.state);
                if matches!(
                    s.state,
                    StepState::Failed | StepState::Refused | StepState::Rejected
                ) && !s.reason.is_empty()
                {
                    l.push_str(&format!(" ({})", s.reason));
                }
                if let (Some(by), StepState::Rejected) = (&s.decided_by, s.state) {
                    l.push_str(&format!(" — rejected by {by}"));
                } else if let Some(by) = &s.decided_by {
                    l.push_str(&format!(" — approved by {by}"));
                }
                l
            })
            .collect()
    }

    /// Whether the escalation pages on-call (the newest `escalated` event's `page`): a flap
    /// the breaker already paged for in its window does not page again.
    pub fn pages(&self) -> bool {
        self.timeline
            .iter()
            .rev()
            .find(|e| e.kind == "escalated")
            .is_none_or(|e| crate::domain::escalation::pages(&e.detail))
    }

    /// Why the incident was escalated (the newest `escalated` event's reason).
    pub fn escalation_reason(&self) -> Option<String> {
        self.timeline
            .iter()
            .rev()
            .find(|e| e.kind == "escalated")
            .and_then(|e| e.detail.get("reason"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The approvals a person is asked for now: each `approval_requested` event whose step is
    /// still waiting. The message's lines and its buttons both come from this, so a rendering
    /// read between the step's move and its event shows neither rather than one without the other.
    pub fn waiting_approvals(&self) -> impl Iterator<Item = (&TimelineEvent, &Step)> + '_ {
        self.timeline
            .iter()
            .filter(|e| e.kind == "approval_requested")
            .filter_map(|e| {
                let step = e.detail.get("step").and_then(Value::as_i64)?;
                self.steps
                    .iter()
                    .find(|s| s.id == step && s.state == StepState::WaitingApproval)
                    .map(|s| (e, s))
            })
    }

    /// What needs a person: approvals waiting (with how to approve) and the escalation.
    pub fn person_lines(&self, escape: impl Fn(&str) -> String) -> Vec<String> {
        let mut lines = Vec::new();
        for (e, _) in self.waiting_approvals() {
            let name = e
                .detail
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("action");
            let target = e.detail.get("target").and_then(Value::as_str).unwrap_or("");
            let path = e
                .detail
                .pointer("/output/approve")
                .and_then(Value::as_str)
                .unwrap_or("");
            let url = format!("{}{path}", self.external_url.trim_end_matches('/'));
            lines.push(format!(
                "approve `{}` on {}: {}`POST {}` (with the admin token)",
                escape(name),
                escape(target),
                if self.buttons {
                    "the buttons below, or "
                } else {
                    ""
                },
                escape(&url)
            ));
        }
        if self.incident.status == IncidentStatus::Escalated {
            let why = self
                .escalation_reason()
                .unwrap_or_else(|| "escalated".to_owned());
            lines.push(format!("escalated: {}", escape(&why)));
        }
        lines
    }

    /// The incident's page (`/ui/incidents/{id}`), when the external URL is known: what a person
    /// paged at night opens from Slack or PagerDuty.
    pub fn incident_url(&self) -> Option<String> {
        (!self.external_url.is_empty()).then(|| {
            format!(
                "{}/ui/incidents/{}",
                self.external_url.trim_end_matches('/'),
                self.incident.id
            )
        })
    }

    /// One line for notifications that show no blocks.
    pub fn fallback(&self) -> String {
        format!(
            "{} — last good backup {}",
            self.headline(),
            self.rpo_words()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::finding::Finding;
    use chrono::TimeZone;
    use serde_json::json;

    fn incident(status: IncidentStatus) -> Incident {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        Incident {
            id: 7,
            status,
            alertname: "PostgreSQLBackupFailed".into(),
            fingerprint: "f".into(),
            severity: "warning".into(),
            labels: json!({}),
            annotations: json!({}),
            generator_url: String::new(),
            starts_at: at,
            opened_at: at,
            updated_at: at,
            resolved_at: None,
            last_seen_at: at,
            renotified_count: 0,
            target: Some("billing".into()),
        }
    }

    fn finding(probe: &str, evidence: Value) -> Finding {
        Finding {
            probe: probe.into(),
            status: crate::domain::finding::Status::Ok,
            summary: String::new(),
            evidence,
            signals: vec![],
            started_at: Utc::now(),
            duration_ms: 1,
        }
    }

    #[test]
    fn the_last_good_backup_is_the_metric_and_else_the_newest_s3_object() {
        let metrics = finding(
            "backup_metrics",
            json!({ "last_success": "2026-03-01T08:00:00Z" }),
        );
        let s3 = finding(
            "s3",
            json!({ "listing": { "newest": { "last_modified": "2026-03-01T09:30:00Z" } } }),
        );
        let never = finding("backup_metrics", json!({ "last_success": null }));
        // An object newer than the last success the job reported may be a failed upload.
        assert_eq!(
            last_good_backup(&[metrics.clone(), s3.clone()]),
            Some(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap())
        );
        assert_eq!(
            last_good_backup(std::slice::from_ref(&s3)),
            Some(Utc.with_ymd_and_hms(2026, 3, 1, 9, 30, 0).unwrap())
        );
        assert_eq!(
            last_good_backup(&[metrics]),
            Some(Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap())
        );
        assert_eq!(last_good_backup(&[never]), None);
    }

    #[test]
    fn the_rpo_reads_the_age_in_hours_up_to_three_days_against_the_target() {
        let i = incident(IncidentStatus::Escalated);
        let view = |age_seconds: i64| View {
            incident: &i,
            diagnosis: None,
            steps: &[],
            timeline: &[],
            last_good_backup: Some(i.opened_at - chrono::Duration::seconds(age_seconds)),
            now: i.opened_at,
            external_url: "",
            rpo_hours: 24,
            buttons: false,
        };
        assert_eq!(view(59).rpo_words(), "59 s ago (RPO target 24 h: within)");
        assert_eq!(
            view(26 * 3600 + 5 * 60).rpo_words(),
            "26 h 5 min ago (RPO target 24 h: BREACHED)"
        );
        assert_eq!(
            view(4 * 86_400 + 2 * 3600).rpo_words(),
            "4 d 2 h ago (RPO target 24 h: BREACHED)"
        );
    }

    #[test]
    fn without_a_known_backup_the_rpo_is_unknown_and_an_escalation_names_its_reason() {
        let i = incident(IncidentStatus::Escalated);
        let timeline = vec![TimelineEvent {
            id: 1,
            at: i.opened_at,
            kind: "escalated".into(),
            detail: json!({ "reason": "S3 <denied>" }),
        }];
        let v = View {
            incident: &i,
            diagnosis: None,
            steps: &[],
            timeline: &timeline,
            last_good_backup: None,
            now: i.opened_at,
            external_url: "",
            rpo_hours: 24,
            buttons: false,
        };
        assert!(v.rpo_words().starts_with("unknown"), "{}", v.rpo_words());
        assert_eq!(v.incident_url(), None);
        assert_eq!(
            v.person_lines(|s| s.replace('<', "&lt;").replace('>', "&gt;")),
            ["escalated: S3 &lt;denied&gt;"]
        );
        assert!(v.headline().contains("Escalated") && v.headline().contains("not diagnosed"));
    }

    #[test]
    fn a_waiting_step_is_offered_only_once_its_approval_request_is_on_the_timeline() {
        let i = incident(IncidentStatus::Open);
        let step = Step {
            id: 3,
            incident_id: i.id,
            seq: 1,
            group: 0,
            kind: StepKind::Action,
            name: "restart_primary".parse().unwrap(),
            target: "statefulset/ns/pg".into(),
            decision: Decision::Approve,
            state: StepState::WaitingApproval,
            reason: String::new(),
            output: json!({}),
            decided_by: None,
            decided_at: None,
            started_at: None,
            finished_at: None,
        };
        let steps = [step];
        let requested = TimelineEvent {
            id: 9,
            at: i.opened_at,
            kind: "approval_requested".into(),
            detail: json!({ "step": 3, "name": "restart_primary", "target": "statefulset/ns/pg",
                            "output": { "approve": "/api/v1/incidents/7/actions/3/approve" } }),
        };
        let empty = [];
        let with_request = [requested];
        let [before, after] = [&empty[..], &with_request[..]].map(|timeline| View {
            incident: &i,
            diagnosis: None,
            steps: &steps,
            timeline,
            last_good_backup: None,
            now: i.opened_at,
            external_url: "https://br.example",
            rpo_hours: 24,
            buttons: true,
        });
        // Read between the step's move and its event: neither a line nor (in Slack) a button.
        assert_eq!(before.waiting_approvals().count(), 0);
        assert!(before.person_lines(str::to_owned).is_empty());
        let offered: Vec<i64> = after.waiting_approvals().map(|(_, s)| s.id).collect();
        assert_eq!(offered, [3]);
        assert!(after.person_lines(str::to_owned)[0].contains("the buttons below"));
    }
}
