//! One escalation, one shape. Whatever hands an incident to people — a playbook's escalate step,
//! the flapping breaker, the runbook's deadline, a failed restore test — records the same
//! `escalated` event detail: the rule, the reason, the diagnosis, the RPO impact (always under
//! `rpo`), the steps not done and those still running, and whether it pages on-call.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::action::ActionName;
use crate::domain::diagnosis::{Diagnosis, Scenario};
use crate::domain::finding::Finding;
use crate::domain::names::string_enum;
use crate::domain::plan::{Step, StepState};

string_enum!(
    /// What handed the incident to people.
    pub Rule "escalation rule" {
        /// The plan's escalate step (the playbook's last resort, or a dry run's end).
        Plan => "plan",
        /// The flapping breaker: the alert keeps coming back, nothing is tried.
        Breaker => "breaker",
        /// The runbook's deadline: the backup still fails N hours after the incident opened.
        Deadline => "deadline",
        /// The newest backup failed its restore test.
        RestoreTest => "restore_test",
    }
);

/// The RPO impact an escalation states: now − the last successful backup, against the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rpo {
    /// In words, for people.
    pub rpo_impact: String,
    pub last_successful_backup: Option<DateTime<Utc>>,
    pub rpo_impact_seconds: Option<i64>,
    pub rpo_target_hours: u64,
    /// True too when no backup is on record.
    pub rpo_breached: bool,
}

impl Rpo {
    /// The impact at `now` of a last good backup at `last` against `rpo_hours`.
    pub fn at(last: Option<DateTime<Utc>>, now: DateTime<Utc>, rpo_hours: u64) -> Self {
        let impact = last.map(|t| (now - t).num_seconds());
        let target = i64::try_from(rpo_hours).unwrap_or(i64::MAX / 3600) * 3600;
        let breached = impact.is_none_or(|s| s > target);
        let words = match (impact, last) {
            (Some(s), Some(t)) => format!(
                "last successful backup {} ago ({}), RPO target {rpo_hours} h {}",
                crate::domain::duration::human(s),
                t.to_rfc3339(),
                if breached {
                    "breached"
                } else {
                    "not yet breached"
                }
            ),
            _ => format!("no successful backup on record, RPO target {rpo_hours} h breached"),
        };
        Self {
            rpo_impact: words,
            last_successful_backup: last,
            rpo_impact_seconds: impact,
            rpo_target_hours: rpo_hours,
            rpo_breached: breached,
        }
    }
}

/// The last successful backup the probes saw: the backup job's own `last_success` metric when
/// Prometheus has it (an object in S3 may be a partial or failed upload), else the newest object
/// of the S3 listing.
pub fn last_good_backup(findings: &[Finding]) -> Option<DateTime<Utc>> {
    let parse =
        |v: Option<&Value>| -> Option<DateTime<Utc>> { serde_json::from_value(v?.clone()).ok() };
    let from = |probe: &str, pointer: &str| {
        findings
            .iter()
            .filter(|f| f.probe == probe)
            .find_map(|f| parse(f.evidence.pointer(pointer)))
    };
    from("backup_metrics", "/last_success").or_else(|| from("s3", "/listing/newest/last_modified"))
}

/// A step as an escalation names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepNote {
    pub step: i64,
    pub name: ActionName,
    pub target: String,
    pub state: StepState,
    pub reason: String,
}

impl StepNote {
    fn of(s: &Step) -> Self {
        Self {
            step: s.id,
            name: s.name,
            target: s.target.clone(),
            state: s.state,
            reason: s.reason.clone(),
        }
    }
}

/// What the escalation's caller knows: the rule, the reason in words, whether it pages (`None`)
/// or another incident already paged for the same cause (`Some(id)`), and the rule's own facts.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub rule: Rule,
    pub reason: String,
    pub paged_with: Option<i64>,
    /// The rule's own facts (the deadline's hours, the restore test and object), kept under
    /// `context`.
    pub context: Value,
}

impl Cause {
    /// A cause that pages.
    pub fn new(rule: Rule, reason: impl Into<String>, context: Value) -> Self {
        Self {
            rule,
            reason: reason.into(),
            paged_with: None,
            context,
        }
    }
}

/// The `escalated` event of an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Escalation {
    pub rule: Rule,
    /// Why, in words; names what is still running when something is.
    pub reason: String,
    pub scenario: Option<Scenario>,
    pub diagnosis: Option<String>,
    pub rpo: Rpo,
    /// Steps that failed, were refused, rejected, interrupted or only dry-run.
    pub steps_not_done: Vec<StepNote>,
    /// Steps still running when the incident was handed over: they finish, and a fix they prove
    /// makes the incident `remediated` (and resolves the page).
    pub still_running: Vec<StepNote>,
    /// Whether this escalation pages on-call.
    pub page: bool,
    /// The incident whose page already covers this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paged_with: Option<i64>,
    pub context: Value,
}

impl Escalation {
    /// The escalation of an incident with these `steps`, `diagnosis` and `findings` at `now`.
    pub fn new(
        cause: Cause,
        steps: &[Step],
        diagnosis: Option<&Diagnosis>,
        findings: &[Finding],
        now: DateTime<Utc>,
        rpo_hours: u64,
    ) -> Self {
        let not_done = steps
            .iter()
            .filter(|s| {
                matches!(
                    s.state,
                    StepState::Failed
                        | StepState::Refused
                        | StepState::Rejected
                        | StepState::Interrupted
                        | StepState::DryRun
                )
            })
            .map(StepNote::of)
            .collect();
        let still_running: Vec<StepNote> = steps
            .iter()
            .filter(|s| s.state == StepState::Running)
            .map(StepNote::of)
            .collect();
        let mut reason = cause.reason;
        if !still_running.is_empty() {
            let names: Vec<String> = still_running
                .iter()
                .map(|s| format!("{} (step {})", s.name, s.step))
                .collect();
            reason.push_str(&format!(
                "; still running: {} — its outcome is recorded on the incident",
                names.join(", ")
            ));
        }
        Self {
            rule: cause.rule,
            reason,
            scenario: diagnosis.map(|d| d.scenario),
            diagnosis: diagnosis.map(|d| d.summary.clone()),
            rpo: Rpo::at(last_good_backup(findings), now, rpo_hours),
            steps_not_done: not_done,
            still_running,
            page: cause.paged_with.is_none(),
            paged_with: cause.paged_with,
            context: cause.context,
        }
    }

    /// The event detail as stored.
    pub fn detail(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({ "reason": self.reason }))
    }

    /// The scenario's name for metrics and logs.
    pub fn scenario_name(&self) -> &'static str {
        self.scenario.map_or("unknown", |s| s.as_str())
    }
}

/// Whether an `escalated` event's detail pages on-call (events written before `page` existed
/// did).
pub fn pages(detail: &Value) -> bool {
    detail.get("page").and_then(Value::as_bool).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rpo_impact_is_now_minus_the_last_good_backup_against_the_target() {
        let now = Utc::now();
        let fresh = Rpo::at(Some(now - chrono::Duration::hours(3)), now, 24);
        assert_eq!(fresh.rpo_impact_seconds, Some(3 * 3600));
        assert!(!fresh.rpo_breached);
        let stale = Rpo::at(Some(now - chrono::Duration::hours(30)), now, 24);
        assert!(stale.rpo_breached);
        assert!(stale.rpo_impact.contains("30 h ago"));
        let never = Rpo::at(None, now, 24);
        assert!(never.rpo_breached);
        assert!(never.rpo_impact.starts_with("no successful backup"));
    }

    #[test]
    fn every_rule_writes_one_shape_with_the_rpo_in_one_place() {
        let now = Utc::now();
        for rule in [Rule::Plan, Rule::Breaker, Rule::Deadline, Rule::RestoreTest] {
            let e = Escalation::new(Cause::new(rule, "why", json!({})), &[], None, &[], now, 24);
            let d = e.detail();
            assert_eq!(d["rule"], rule.as_str());
            assert_eq!(d["rpo"]["rpo_breached"], true);
            assert!(d.get("rpo_impact_seconds").is_none(), "only under rpo: {d}");
            assert_eq!(d["page"], true);
            assert!(pages(&d));
        }
        let mut cause = Cause::new(Rule::Breaker, "again", json!({}));
        cause.paged_with = Some(7);
        let d = Escalation::new(cause, &[], None, &[], now, 24).detail();
        assert_eq!(
            (d["page"].clone(), d["paged_with"].clone()),
            (json!(false), json!(7))
        );
        assert!(!pages(&d));
    }
}
