//! The backup CronJob itself, for the `backup_job` probe: a backup that fails silently is most
//! often one that never starts — the CronJob suspended, deleted, or a schedule that never fires
//! (its last run older than the schedule allows, or never run long after it was created).

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::batch::v1::CronJob;
use kube::Api;
use serde_json::{json, Value};

use super::Signal;
use crate::config::KubeSettings;

/// Slack on top of the schedule's longest gap: the controller may start a run late.
const GRACE: Duration = Duration::hours(1);

/// An upper bound on the time between two firings of a cron `schedule` (5 fields or a macro,
/// optionally after `CRON_TZ=`/`TZ=`): the finest field that is not `*` bounds it. `None` for a
/// schedule this does not understand.
pub fn longest_gap(schedule: &str) -> Option<Duration> {
    let mut words: Vec<&str> = schedule.split_whitespace().collect();
    if words
        .first()
        .is_some_and(|w| w.starts_with("CRON_TZ=") || w.starts_with("TZ="))
    {
        words.remove(0);
    }
    match words[..] {
        ["@yearly" | "@annually"] => Some(Duration::days(366)),
        ["@monthly"] => Some(Duration::days(31)),
        ["@weekly"] => Some(Duration::days(7)),
        ["@daily" | "@midnight"] => Some(Duration::days(1)),
        ["@hourly"] => Some(Duration::hours(1)),
        [_minute, hour, dom, month, dow] => Some(if month != "*" {
            Duration::days(366)
        } else if dom != "*" {
            Duration::days(31)
        } else if dow != "*" {
            Duration::days(7)
        } else if hour != "*" {
            Duration::days(1)
        } else {
            Duration::hours(1)
        }),
        _ => None,
    }
}

/// What the CronJob's spec and status say about runs that should have happened by `now`.
pub fn assess(name: &str, cj: &CronJob, now: DateTime<Utc>) -> (Value, Vec<Signal>) {
    let spec = cj.spec.as_ref();
    let schedule = spec.map(|s| s.schedule.clone()).unwrap_or_default();
    let suspended = spec.and_then(|s| s.suspend).unwrap_or(false);
    let last = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0);
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let gap = longest_gap(&schedule);
    let evidence = json!({
        "cronjob": name, "schedule": schedule, "suspend": suspended,
        "last_schedule_time": last, "created": created,
        "longest_gap_hours": gap.map(|g| g.num_hours()),
    });
    let mut signals = Vec::new();
    if suspended {
        signals.push(Signal::CronJobSuspended {
            cronjob: name.to_owned(),
        });
        return (evidence, signals);
    }
    let Some(allowed) = gap.map(|g| g + GRACE) else {
        return (evidence, signals);
    };
    let late = |since: DateTime<Utc>| now - since > allowed;
    let hours = |d: Duration| d.num_hours();
    match (last, created) {
        (Some(last), _) if late(last) => signals.push(Signal::ScheduleNotFiring {
            cronjob: name.to_owned(),
            detail: format!(
                "last scheduled {} h ago; schedule \"{schedule}\" fires at least every {} h",
                hours(now - last),
                hours(allowed - GRACE)
            ),
        }),
        (None, Some(created)) if late(created) => signals.push(Signal::ScheduleNotFiring {
            cronjob: name.to_owned(),
            detail: format!(
                "never scheduled in the {} h since it was created; schedule \"{schedule}\"",
                hours(now - created)
            ),
        }),
        _ => {}
    }
    (evidence, signals)
}

/// Reads the backup CronJob and assesses it; the evidence says why when it could not be read.
pub async fn check(client: kube::Client, k: &KubeSettings) -> (Value, Vec<Signal>) {
    let api: Api<CronJob> = Api::namespaced(client, &k.namespace);
    match api.get_opt(&k.backup_cronjob).await {
        Ok(Some(cj)) => assess(&k.backup_cronjob, &cj, Utc::now()),
        Ok(None) => (
            json!({ "cronjob": k.backup_cronjob, "exists": false }),
            vec![Signal::CronJobMissing {
                cronjob: k.backup_cronjob.clone(),
            }],
        ),
        Err(e) => (
            json!({ "cronjob": k.backup_cronjob, "error": e.to_string() }),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob(schedule: &str, suspend: bool, last: Option<&str>, created: &str) -> CronJob {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "postgres-backup", "creationTimestamp": created},
            "spec": {"schedule": schedule, "suspend": suspend,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
            "status": {"lastScheduleTime": last}
        }))
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_longest_gap_is_bounded_by_the_finest_restricted_field() {
        assert_eq!(longest_gap("0 2 * * *"), Some(Duration::days(1)));
        assert_eq!(longest_gap("*/15 * * * *"), Some(Duration::hours(1)));
        assert_eq!(longest_gap("0 3 * * 0"), Some(Duration::days(7)));
        assert_eq!(
            longest_gap("CRON_TZ=UTC 0 3 1 * *"),
            Some(Duration::days(31))
        );
        assert_eq!(longest_gap("@weekly"), Some(Duration::days(7)));
        assert_eq!(longest_gap("every day"), None);
    }

    #[test]
    fn a_suspended_late_or_never_run_cronjob_is_a_finding() {
        let now = at("2026-11-30T12:00:00Z");
        let ok = cronjob(
            "0 2 * * *",
            false,
            Some("2026-11-30T02:00:00Z"),
            "2026-01-01T00:00:00Z",
        );
        assert!(assess("b", &ok, now).1.is_empty());
        let suspended = cronjob(
            "0 2 * * *",
            true,
            Some("2026-11-30T02:00:00Z"),
            "2026-01-01T00:00:00Z",
        );
        assert!(matches!(
            assess("b", &suspended, now).1[..],
            [Signal::CronJobSuspended { .. }]
        ));
        let late = cronjob(
            "0 2 * * *",
            false,
            Some("2026-11-27T02:00:00Z"),
            "2026-01-01T00:00:00Z",
        );
        let (_, s) = assess("b", &late, now);
        let [Signal::ScheduleNotFiring { detail, .. }] = &s[..] else {
            panic!("{s:?}")
        };
        assert!(detail.contains("last scheduled 82 h ago"), "{detail}");
        let never = cronjob("0 2 * * *", false, None, "2026-11-28T00:00:00Z");
        assert!(matches!(
            assess("b", &never, now).1[..],
            [Signal::ScheduleNotFiring { .. }]
        ));
        let new = cronjob("0 2 * * *", false, None, "2026-11-30T11:00:00Z");
        assert!(assess("b", &new, now).1.is_empty());
    }
}
