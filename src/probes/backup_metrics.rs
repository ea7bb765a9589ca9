//! `backup_metrics`: what the backup job itself reported to Prometheus — the age of its last
//! success (the RPO exposure) and whether its error counter grew in the last 24 hours.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::{Probe, ProbeContext, ProbeOutput, Signal};
use crate::domain::duration::human_age;
use crate::infra::prometheus::{self, QueryError};

/// The runbook's alert: no successful backup in the last 24 hours.
pub const MAX_SUCCESS_AGE_SECONDS: i64 = 24 * 3600;

const LAST_SUCCESS: &str = "max(postgres_backup_last_success_timestamp)";
const ERRORS: &str = "sum(increase(postgres_backup_errors_total[24h]))";

pub struct BackupMetrics;

impl Probe for BackupMetrics {
    fn name(&self) -> &'static str {
        "backup_metrics"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let url = ctx.settings.prometheus.url.clone();
            let (last, errors) = tokio::join!(
                prometheus::query(&ctx.http, &url, LAST_SUCCESS),
                prometheus::query(&ctx.http, &url, ERRORS)
            );
            assess(last, errors, Utc::now())
        })
    }
}

fn assess(
    last: Result<Vec<prometheus::Sample>, QueryError>,
    errors: Result<Vec<prometheus::Sample>, QueryError>,
    now: DateTime<Utc>,
) -> ProbeOutput {
    let (last, errors) = match (last, errors) {
        (Err(e), _) | (_, Err(e)) => return ProbeOutput::error(e.to_string()),
        (Ok(l), Ok(e)) => (l, e),
    };
    let mut signals = Vec::new();
    let mut words = Vec::new();
    let mut evidence = serde_json::json!({ "queries": [LAST_SUCCESS, ERRORS] });

    match last.first().map(|s| s.value) {
        None => {
            signals.push(Signal::BackupNeverReported);
            words.push("the backup job never reported a success (no postgres_backup_last_success_timestamp)".to_owned());
            evidence["last_success"] = serde_json::Value::Null;
        }
        Some(ts) => {
            let last_success = DateTime::from_timestamp(ts as i64, 0).unwrap_or_default();
            let age = (now - last_success).num_seconds();
            evidence["last_success"] = serde_json::json!(last_success);
            evidence["age_seconds"] = serde_json::json!(age);
            if age > MAX_SUCCESS_AGE_SECONDS {
                signals.push(Signal::LastSuccessStale { age_seconds: age });
                words.push(format!(
                    "last successful backup {} ago (over 24 h)",
                    human_age(age)
                ));
            } else {
                words.push(format!("last successful backup {} ago", human_age(age)));
            }
        }
    }
    match errors.first().map(|s| s.value) {
        None => {
            evidence["errors_increase_24h"] = serde_json::Value::Null;
            words.push("no postgres_backup_errors_total series".to_owned());
        }
        Some(n) => {
            evidence["errors_increase_24h"] = serde_json::json!(n);
            if n > 0.0 {
                signals.push(Signal::BackupErrors { increase: n });
                words.push(format!("{n:.0} backup errors in 24 h"));
            } else {
                words.push("no backup errors in 24 h".to_owned());
            }
        }
    }
    let summary = capitalise(&words.join("; "));
    if signals.is_empty() {
        ProbeOutput::ok(summary).with_evidence(evidence)
    } else {
        ProbeOutput::problem(summary, signals).with_evidence(evidence)
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::finding::Status;
    use crate::infra::prometheus::Sample;

    fn v(x: f64) -> Result<Vec<Sample>, QueryError> {
        Ok(vec![Sample {
            labels: Default::default(),
            value: x,
        }])
    }

    #[test]
    fn a_stale_success_and_errors_are_both_signals() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let out = assess(v(1_800_000_000.0 - 30.0 * 3600.0), v(3.0), now);
        assert_eq!(out.status, Status::Problem);
        assert_eq!(
            out.signals,
            vec![
                Signal::LastSuccessStale {
                    age_seconds: 30 * 3600
                },
                Signal::BackupErrors { increase: 3.0 }
            ]
        );
        assert_eq!(
            out.summary,
            "Last successful backup 30 h 0 min ago (over 24 h); 3 backup errors in 24 h"
        );
    }

    #[test]
    fn no_series_means_the_job_never_reported() {
        let out = assess(Ok(vec![]), Ok(vec![]), Utc::now());
        assert_eq!(out.signals, vec![Signal::BackupNeverReported]);
    }

    #[test]
    fn a_recent_success_without_errors_is_ok() {
        let now = Utc::now();
        let out = assess(v(now.timestamp() as f64 - 600.0), v(0.0), now);
        assert_eq!(out.status, Status::Ok);
        assert_eq!(
            out.summary,
            "Last successful backup 10 min ago; no backup errors in 24 h"
        );
    }

    #[test]
    fn an_unreachable_prometheus_is_an_error_finding() {
        let e = QueryError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "Connection refused".into(),
        };
        let out = assess(Err(e), v(0.0), Utc::now());
        assert_eq!(out.status, Status::Error);
        assert!(out.summary.contains("unreachable"));
    }
}
