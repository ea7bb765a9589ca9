//! Diagnosis: from the probes' findings to the runbook scenario that explains the failure, with
//! the evidence that decided it and a confidence. Pure: data in, data out.
//!
//! How it decides. Each signal supports at most one scenario, either *directly* (a probe
//! established the fact: the role is missing, the bucket is gone) or *by the job's logs* (a line
//! matched a runbook error pattern). A scenario confirmed both ways wins; then the one with the
//! most support; ties go to the step the backup job reaches first (connect → authenticate → dump
//! to disk → encrypt → upload), because the earliest broken step is the one that failed this run.
//! Two log patterns are ambiguous in the runbook and are settled by the other probes:
//! - "permission denied" may be the database (scenario 2), the filesystem (3) or S3 (4): it
//!   supports whichever of those a probe found directly, and scenario 2 (where the runbook lists
//!   it) only when none did.
//! - "timeout" may be the database (1) or the network to S3 (4): S3 when the S3 probe found an
//!   access problem, the database otherwise.

mod rules;
mod scenarios;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::finding::{Finding, Signal, Status};
pub use rules::describe;
use rules::{direct_support, log_support};
pub use scenarios::Scenario;

/// One piece of evidence behind a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    pub probe: String,
    /// `direct` (a probe established it) or `log` (a backup log line matched).
    pub kind: String,
    pub text: String,
}

/// The scenario that explains the failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Diagnosis {
    pub scenario: Scenario,
    /// 0 to 1.
    pub confidence: f64,
    /// One paragraph for the person on call.
    pub summary: String,
    /// What decided it, strongest first.
    pub evidence: Vec<Evidence>,
    /// Other problems found that did not decide this run's failure.
    pub also: Vec<Scenario>,
    /// Backup health facts that explain no scenario but matter (RPO, job state).
    pub context: Vec<String>,
}

#[derive(Default)]
struct Support {
    direct: f64,
    log: f64,
    evidence: Vec<(f64, Evidence)>,
}

/// Names the scenario that explains the findings.
pub fn diagnose(findings: &[Finding]) -> Diagnosis {
    let mut support: BTreeMap<Scenario, Support> = BTreeMap::new();
    let mut context = Vec::new();
    // Direct evidence first: log patterns are read in its light.
    for f in findings {
        for s in &f.signals {
            match direct_support(s) {
                Some((scenario, w)) => {
                    let e = support.entry(scenario).or_default();
                    e.direct = e.direct.max(w);
                    e.evidence.push((
                        w,
                        Evidence {
                            probe: f.probe.clone(),
                            kind: "direct".into(),
                            text: describe(s),
                        },
                    ));
                }
                None if !matches!(s, Signal::LogMatch { .. }) => context.push(describe(s)),
                None => {}
            }
        }
    }
    let direct_only: BTreeMap<Scenario, Support> = support
        .iter()
        .map(|(k, v)| {
            (
                *k,
                Support {
                    direct: v.direct,
                    log: 0.0,
                    evidence: Vec::new(),
                },
            )
        })
        .collect();
    for f in findings {
        for s in &f.signals {
            if let Signal::LogMatch { pattern, .. } = s {
                let (scenario, w) = log_support(*pattern, &direct_only);
                let e = support.entry(scenario).or_default();
                e.log = e.log.max(w);
                e.evidence.push((
                    w,
                    Evidence {
                        probe: f.probe.clone(),
                        kind: "log".into(),
                        text: describe(s),
                    },
                ));
            }
        }
    }

    let ranked = {
        let mut v: Vec<(Scenario, &Support)> = support.iter().map(|(k, v)| (*k, v)).collect();
        // Confirmed both ways first, then total support, then the earliest step of the job
        // (the enum's order), which `sort_by` keeps for equal keys.
        // A scenario whose log line is decisive counts as confirmed.
        v.sort_by(|a, b| {
            let confirmed =
                |k: Scenario, s: &Support| s.log > 0.0 && (s.direct > 0.0 || k.log_is_decisive());
            confirmed(b.0, b.1)
                .cmp(&confirmed(a.0, a.1))
                .then((b.1.direct + b.1.log).total_cmp(&(a.1.direct + a.1.log)))
                .then(a.0.cmp(&b.0))
        });
        v
    };

    let Some(&(scenario, top)) = ranked.first() else {
        return transient(findings, context);
    };
    let competitors = ranked
        .iter()
        .skip(1)
        .filter(|(_, s)| s.direct > 0.0)
        .count();
    let confidence = if top.direct > 0.0 && top.log > 0.0 {
        0.95
    } else if top.direct > 0.0 {
        (0.85 * top.direct - 0.1 * competitors as f64).max(0.5)
    } else {
        // A decisive log line alone is strong, but short of a probe's agreement.
        top.log.min(0.9)
    };
    let mut evidence: Vec<(f64, Evidence)> = top.evidence.clone();
    evidence.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut evidence: Vec<Evidence> = evidence.into_iter().map(|(_, e)| e).collect();
    evidence.dedup();
    let also: Vec<Scenario> = ranked
        .iter()
        .skip(1)
        .filter(|(_, s)| s.direct > 0.0)
        .map(|(k, _)| *k)
        .collect();
    let name = match scenario.number() {
        Some(n) => format!("Scenario {n} ({})", scenario.title()),
        None => format!("Scenario: {}", scenario.title()),
    };
    let mut summary = format!(
        "{name}: {}",
        evidence
            .iter()
            .take(3)
            .map(|e| e.text.clone())
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !also.is_empty() {
        summary.push_str(&format!(
            ". Also found: {}",
            also.iter()
                .map(|s| s.title())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Diagnosis {
        scenario,
        confidence: round2(confidence),
        summary,
        evidence,
        also,
        context,
    }
}

fn transient(findings: &[Finding], context: Vec<String>) -> Diagnosis {
    let unanswered: Vec<&Finding> = findings
        .iter()
        .filter(|f| matches!(f.status, Status::Error | Status::Skipped))
        .collect();
    let (confidence, summary) = if unanswered.is_empty() {
        (0.7, "No probe found a problem: the failure looks transient; re-running the backup is the next step".to_owned())
    } else {
        let names: Vec<&str> = unanswered.iter().map(|f| f.probe.as_str()).collect();
        (
            (0.7 - 0.1 * names.len() as f64).max(0.2),
            format!(
                "No probe found a cause, but {} could not answer ({}): the cause may be there",
                names.len(),
                names.join(", ")
            ),
        )
    };
    let evidence = unanswered
        .iter()
        .map(|f| Evidence {
            probe: f.probe.clone(),
            kind: f.status.as_str().into(),
            text: f.summary.clone(),
        })
        .collect();
    Diagnosis {
        scenario: Scenario::TransientUnknown,
        confidence: round2(confidence),
        summary,
        evidence,
        also: Vec::new(),
        context,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
