//! The freshness cross-check: the newest backup according to the repository against the backup
//! metric. A metric can lie (a series that never resets, a stale or zero value after an exporter
//! moves), and a repository can stop receiving backups while the metric still looks fresh; when
//! one says "fresh" and the other "stale" the disagreement is a finding of its own. Pure.

use chrono::{DateTime, Utc};

use crate::domain::duration::human;

/// What one side says about the newest backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A backup finished at this time.
    At(DateTime<Utc>),
    /// This side knows of no backup at all.
    None,
}

/// A disagreement: each side's age (None: it knows no backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disagreement {
    pub metric_age_seconds: Option<i64>,
    pub repository_age_seconds: Option<i64>,
}

fn age(side: Side, now: DateTime<Utc>) -> Option<i64> {
    match side {
        Side::At(t) => Some((now - t).num_seconds().max(0)),
        Side::None => None,
    }
}

/// Whether the two sides disagree on freshness against the RPO; `None` when they agree (both
/// fresh, or both stale).
pub fn cross_check(
    metric: Side,
    repository: Side,
    now: DateTime<Utc>,
    rpo_hours: u64,
) -> Option<Disagreement> {
    let rpo = i64::try_from(rpo_hours).unwrap_or(i64::MAX / 3600) * 3600;
    let fresh = |a: Option<i64>| a.is_some_and(|a| a <= rpo);
    let (m, r) = (age(metric, now), age(repository, now));
    (fresh(m) != fresh(r)).then_some(Disagreement {
        metric_age_seconds: m,
        repository_age_seconds: r,
    })
}

/// The finding's sentence: which side says what.
pub fn disagreement_words(metric: Option<i64>, repository: Option<i64>, rpo_hours: u64) -> String {
    let said = |a: Option<i64>, what: &str| match a {
        Some(a) => format!("{what} {} old", human(a)),
        None => format!("{what} none"),
    };
    let rpo = i64::try_from(rpo_hours).unwrap_or(i64::MAX / 3600) * 3600;
    let metric_fresh = metric.is_some_and(|a| a <= rpo);
    format!(
        "the backup metric and the repository disagree: metric says {} ({}), repository's newest \
         is {} (RPO {rpo_hours} h){}",
        if metric_fresh { "fresh" } else { "stale" },
        said(metric, "last success"),
        match repository {
            Some(a) => format!("{} old", human(a)),
            None => "missing: it holds no backup".to_owned(),
        },
        if metric_fresh {
            ": backups are not reaching the repository while the metric looks healthy"
        } else {
            ": the metric lies, the repository has a fresh backup"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours_ago: i64) -> Side {
        Side::At(now() - chrono::Duration::hours(hours_ago))
    }

    fn now() -> DateTime<Utc> {
        "2026-12-08T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn agreeing_sides_are_no_finding() {
        assert_eq!(cross_check(at(2), at(3), now(), 24), None);
        assert_eq!(cross_check(at(30), Side::None, now(), 24), None);
    }

    #[test]
    fn a_fresh_metric_over_a_stale_repository_is_a_finding_in_plain_words() {
        let d = cross_check(at(2), at(72), now(), 24).unwrap();
        assert_eq!(d.repository_age_seconds, Some(72 * 3600));
        let words = disagreement_words(d.metric_age_seconds, d.repository_age_seconds, 24);
        assert_eq!(
            words,
            "the backup metric and the repository disagree: metric says fresh (last success 2 h \
             old), repository's newest is 3 d old (RPO 24 h): backups are not reaching the \
             repository while the metric looks healthy"
        );
    }

    #[test]
    fn a_stale_metric_over_a_fresh_repository_says_the_metric_lies() {
        let d = cross_check(at(30), at(1), now(), 24).unwrap();
        let words = disagreement_words(d.metric_age_seconds, d.repository_age_seconds, 24);
        assert!(words.contains("metric says stale"), "{words}");
        assert!(words.ends_with("the metric lies, the repository has a fresh backup"));
        let none = cross_check(at(1), Side::None, now(), 24).unwrap();
        assert!(
            disagreement_words(none.metric_age_seconds, none.repository_age_seconds, 24)
                .contains("repository's newest is missing: it holds no backup")
        );
    }
}
