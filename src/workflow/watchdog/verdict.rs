//! What the watchdog concludes for one database from what it saw: pure, data in and out.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::infra::prometheus::Sample;
use crate::infra::s3::ObjectInfo;

/// Why a database's backups are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The newest backup is older than the RPO.
    Stale,
    /// No backup of the database at all.
    NoBackup,
    /// The backup job's metric series is gone.
    MetricAbsent,
    /// The backup job's metric says its last success is older than the RPO, and S3 could not
    /// say otherwise (unreadable, or a listing cut before it found a fresh backup).
    MetricStale,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Stale => "stale",
            Reason::NoBackup => "no_backup",
            Reason::MetricAbsent => "metric_absent",
            Reason::MetricStale => "metric_stale",
        }
    }
}

/// What a listing of the prefix showed of one database.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Listed<'a> {
    /// The newest backup of the database among the keys read.
    pub newest: Option<&'a ObjectInfo>,
    /// Why the listing is incomplete (`None`: every key was read). An incomplete listing proves
    /// a fresh backup it found, never that there is none or that the newest is old.
    pub incomplete: Option<&'a str>,
}

/// What S3 said: what the listing showed, or why it could not be made at all.
pub type S3Seen<'a> = Result<Listed<'a>, &'a str>;
/// What Prometheus said: the series of `postgres_backup_last_success_timestamp`, or the error.
pub type MetricSeen<'a> = Result<&'a [Sample], &'a str>;

/// One database's verdict for a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub database: String,
    /// Empty: nothing wrong was established.
    pub reasons: Vec<Reason>,
    /// Both sources answered and neither is wrong: backups are fresh.
    pub fresh: bool,
    /// What was seen, for the incident and the period's record.
    pub evidence: Value,
    /// One sentence per reason, for people.
    pub words: Vec<String>,
}

/// The last success the metric reports for `database`: its own series (label `database`) when
/// the job labels them, else the job's (all series). `None`: no such series.
fn last_success(samples: &[Sample], database: &str) -> Option<f64> {
    let labelled = samples.iter().any(|s| s.labels.contains_key("database"));
    samples
        .iter()
        .filter(|s| !labelled || s.labels.get("database").is_some_and(|d| d == database))
        .map(|s| s.value)
        .reduce(f64::max)
}

/// Judges one database at `now` against `rpo_hours`. A source that could not answer
/// establishes nothing: the watchdog opens incidents on evidence, never on its own outage.
pub fn judge(
    database: &str,
    s3: S3Seen<'_>,
    metric: MetricSeen<'_>,
    now: DateTime<Utc>,
    rpo_hours: u64,
) -> Verdict {
    let rpo_seconds = i64::try_from(rpo_hours.saturating_mul(3600)).unwrap_or(i64::MAX);
    let mut reasons = Vec::new();
    let mut words = Vec::new();
    let mut evidence = json!({ "database": database, "rpo_hours": rpo_hours });
    let mut s3_fresh = false;
    // Whether S3 established a verdict (fresh, stale or none), as opposed to not answering.
    let mut s3_decided = false;
    match s3 {
        Err(e) => evidence["s3_error"] = json!(e),
        Ok(listed) => {
            if let Some(why) = listed.incomplete {
                evidence["s3_incomplete"] = json!(why);
            }
            let complete = listed.incomplete.is_none();
            match listed.newest {
                None => {
                    evidence["newest"] = Value::Null;
                    if complete {
                        s3_decided = true;
                        reasons.push(Reason::NoBackup);
                        words.push(format!("no backup of {database} in S3"));
                    }
                }
                Some(o) => {
                    let age = o.last_modified.map(|t| (now - t).num_seconds());
                    evidence["newest"] = json!({ "key": o.key, "last_modified": o.last_modified, "size": o.size, "age_seconds": age });
                    match age {
                        Some(a) if a > rpo_seconds => {
                            if complete {
                                s3_decided = true;
                                reasons.push(Reason::Stale);
                                words.push(format!(
                                    "the newest backup of {database} ({}) is {} old, over the RPO of {rpo_hours} h",
                                    o.key,
                                    crate::domain::duration::human(a)
                                ));
                            }
                        }
                        _ => {
                            s3_decided = true;
                            s3_fresh = true;
                        }
                    }
                }
            }
        }
    }
    let mut metric_present = false;
    match metric {
        Err(e) => evidence["metric_error"] = json!(e),
        Ok(samples) => match last_success(samples, database) {
            None => {
                reasons.push(Reason::MetricAbsent);
                words.push(
                    "the backup job's metric postgres_backup_last_success_timestamp is absent"
                        .to_owned(),
                );
                evidence["last_success"] = Value::Null;
            }
            Some(ts) => {
                metric_present = true;
                let age = now.timestamp() - ts as i64;
                evidence["last_success"] = json!(DateTime::from_timestamp(ts as i64, 0));
                evidence["last_success_age_seconds"] = json!(age);
                // The metric's own word counts when S3 could not give one (an S3 verdict
                // already names the stale backup; a fresh object outranks a stale metric).
                if age > rpo_seconds && !s3_decided {
                    reasons.push(Reason::MetricStale);
                    words.push(format!(
                        "the backup job's metric says the last success was {} ago, over the RPO of {rpo_hours} h (S3 could not confirm a newer backup)",
                        crate::domain::duration::human(age)
                    ));
                }
            }
        },
    }
    Verdict {
        database: database.to_owned(),
        fresh: reasons.is_empty() && s3_fresh && metric_present,
        reasons,
        evidence,
        words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn object(age_hours: i64, now: DateTime<Utc>) -> ObjectInfo {
        ObjectInfo {
            key: "postgres-backups/postgres-backup-x_link_users.sql.enc".into(),
            last_modified: Some(now - Duration::hours(age_hours)),
            size: 10,
        }
    }

    fn listed(newest: Option<&ObjectInfo>) -> Listed<'_> {
        Listed {
            newest,
            incomplete: None,
        }
    }

    fn sample(db: Option<&str>, value: f64) -> Sample {
        Sample {
            labels: db
                .map(|d| [("database".to_owned(), d.to_owned())].into())
                .unwrap_or_default(),
            value,
        }
    }

    #[test]
    fn stale_missing_and_absent_are_each_a_reason_and_fresh_is_none() {
        let now = Utc::now();
        let series = [sample(None, now.timestamp() as f64)];
        let fresh = object(2, now);
        let v = judge("link_users", Ok(listed(Some(&fresh))), Ok(&series), now, 24);
        assert!(v.reasons.is_empty() && v.fresh, "{v:?}");
        let old = object(30, now);
        let v = judge("link_users", Ok(listed(Some(&old))), Ok(&series), now, 24);
        assert_eq!(v.reasons, [Reason::Stale]);
        assert!(
            v.words[0].contains("30 h old, over the RPO of 24 h"),
            "{:?}",
            v.words
        );
        let v = judge("link_users", Ok(listed(None)), Ok(&[]), now, 24);
        assert_eq!(v.reasons, [Reason::NoBackup, Reason::MetricAbsent]);
        assert!(!v.fresh);
    }

    #[test]
    fn a_source_that_cannot_answer_establishes_nothing() {
        let now = Utc::now();
        let v = judge(
            "d",
            Err("S3 unreachable"),
            Err("Prometheus unreachable"),
            now,
            24,
        );
        assert!(v.reasons.is_empty() && !v.fresh, "{v:?}");
        assert_eq!(v.evidence["s3_error"], "S3 unreachable");
    }

    #[test]
    fn labelled_series_count_for_their_own_database_only() {
        let now = Utc::now();
        let series = [sample(Some("link_chat"), now.timestamp() as f64)];
        let fresh = object(1, now);
        let v = judge("link_users", Ok(listed(Some(&fresh))), Ok(&series), now, 24);
        assert_eq!(v.reasons, [Reason::MetricAbsent]);
        let v = judge("link_chat", Ok(listed(Some(&fresh))), Ok(&series), now, 24);
        assert!(v.fresh);
    }

    #[test]
    fn an_incomplete_listing_proves_a_fresh_backup_and_nothing_else() {
        let now = Utc::now();
        let series = [sample(None, now.timestamp() as f64)];
        let cut = |newest| Listed {
            newest,
            incomplete: Some("the listing failed after 3 pages"),
        };
        let old = object(30, now);
        for newest in [None, Some(&old)] {
            let v = judge("link_users", Ok(cut(newest)), Ok(&series), now, 24);
            assert!(v.reasons.is_empty() && !v.fresh, "{v:?}");
            assert_eq!(
                v.evidence["s3_incomplete"],
                "the listing failed after 3 pages"
            );
        }
        let fresh = object(1, now);
        let v = judge("link_users", Ok(cut(Some(&fresh))), Ok(&series), now, 24);
        assert!(v.reasons.is_empty() && v.fresh, "{v:?}");
    }

    #[test]
    fn an_old_metric_is_evidence_when_s3_cannot_answer_but_not_against_a_fresh_object() {
        let now = Utc::now();
        let three_days = [sample(None, (now - Duration::days(3)).timestamp() as f64)];
        let v = judge(
            "link_users",
            Err("S3 unreachable"),
            Ok(&three_days),
            now,
            24,
        );
        assert_eq!(v.reasons, [Reason::MetricStale]);
        assert!(v.words[0].contains("3 d"), "{:?}", v.words);
        let fresh = object(1, now);
        let v = judge(
            "link_users",
            Ok(listed(Some(&fresh))),
            Ok(&three_days),
            now,
            24,
        );
        assert!(v.reasons.is_empty(), "{v:?}");
        let old = object(30, now);
        let v = judge(
            "link_users",
            Ok(listed(Some(&old))),
            Ok(&three_days),
            now,
            24,
        );
        assert_eq!(v.reasons, [Reason::Stale]);
    }
}
