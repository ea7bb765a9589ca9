//! The findings and diagnosis as a report a person reads in a terminal (`replay`, `probe`,
//! `incidents show`).

use std::fmt::Write;

use crate::domain::diagnosis::Diagnosis;
use crate::domain::finding::Finding;

/// Renders the findings (one line each, with timing) and the diagnosis.
pub fn render(findings: &[Finding], diagnosis: Option<&Diagnosis>) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(
            out,
            "{:<8} {:<15} {:>6} ms  {}",
            f.status.as_str().to_uppercase(),
            f.probe,
            f.duration_ms,
            f.summary
        );
    }
    if let Some(d) = diagnosis {
        let _ = writeln!(out);
        let number = d
            .scenario
            .number()
            .map(|n| format!("scenario {n}, "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "DIAGNOSIS  {}{} (confidence {:.0}%)",
            number,
            d.scenario.title(),
            d.confidence * 100.0
        );
        let _ = writeln!(out, "           {}", d.summary);
        for e in &d.evidence {
            let _ = writeln!(out, "  - [{} {}] {}", e.kind, e.probe, e.text);
        }
        for c in &d.context {
            let _ = writeln!(out, "  · {c}");
        }
    }
    out
}
