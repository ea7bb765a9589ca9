//! `pgbackrest`: the pgBackRest source's repository, read-only — `pgbackrest info --output=json`
//! (the stanza's and the repository's status, the newest good backup and its stop time, the
//! archived WAL range) and `pgbackrest check` (configuration and WAL archiving, skipped when the
//! run must write nothing: it switches and archives one WAL segment). With
//! `pgbackrest.freshness_metric` set, the repository's newest backup is cross-checked against
//! the metric the alerts use. The probe has its own deadline, `pgbackrest.deadline_ms`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::{Probe, ProbeContext, ProbeOutput, Signal};
use crate::config::Settings;
use crate::domain::freshness::{self, Side};
use crate::infra::pgbackrest::{CheckOutcome, Command, PgBackRestError, StanzaInfo};

pub struct PgBackRest;

/// The pgbackrest command line of a target: its commands get most of the probe's deadline, so
/// that a hung command is reported as such before the probe itself is cut off.
pub fn command(settings: &Settings) -> Command {
    let p = &settings.pgbackrest;
    Command {
        binary: p.binary.clone(),
        config: p.config.clone(),
        stanza: p.stanza.clone(),
        repo: p.repo,
        deadline: Duration::from_millis(p.deadline_ms * 9 / 10),
    }
}

impl Probe for PgBackRest {
    fn name(&self) -> &'static str {
        "pgbackrest"
    }

    fn deadline(&self, settings: &Settings) -> Option<Duration> {
        Some(Duration::from_millis(settings.pgbackrest.deadline_ms))
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let cmd = command(&ctx.settings);
            let check = async {
                match ctx.read_only {
                    Some(why) => Err(why.words()),
                    None => Ok(cmd.check().await),
                }
            };
            let metric = async {
                let promql = &ctx.settings.pgbackrest.freshness_metric;
                if promql.is_empty() {
                    return None;
                }
                let url = &ctx.settings.prometheus.url;
                Some(
                    crate::infra::prometheus::query(&ctx.http, url, promql)
                        .await
                        .map(|samples| {
                            samples
                                .iter()
                                .map(|s| s.value)
                                .filter(|v| v.is_finite() && *v > 0.0)
                                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                        }),
                )
            };
            let (info, check, metric) = tokio::join!(cmd.info(), check, metric);
            judge(&ctx.settings, info, check, metric, Utc::now())
        })
    }
}

type Metric = Option<Result<Option<f64>, crate::infra::prometheus::QueryError>>;

/// Turns what pgbackrest and Prometheus answered into the finding.
fn judge(
    s: &Settings,
    info: Result<Vec<StanzaInfo>, PgBackRestError>,
    check: Result<Result<CheckOutcome, PgBackRestError>, &'static str>,
    metric: Metric,
    now: DateTime<Utc>,
) -> ProbeOutput {
    let stanza = s.pgbackrest.stanza.clone();
    let repo = s.pgbackrest.repo;
    let rpo_hours = s.notify.rpo_hours;
    let mut evidence = json!({ "stanza": stanza, "repo": repo });
    let mut signals = Vec::new();
    let mut words = Vec::new();
    match &check {
        Err(why) => evidence["check"] = json!({ "skipped": why }),
        Ok(Err(e)) => evidence["check"] = json!({ "error": e.to_string() }),
        Ok(Ok(c)) => {
            evidence["check"] = json!({ "ok": c.ok, "code": c.code, "message": c.message });
            if !c.ok {
                words.push(format!("pgbackrest check failed: {}", c.message));
                signals.push(Signal::RepositoryCheckFailed {
                    stanza: stanza.clone(),
                    code: c.code,
                    message: c.message.clone(),
                });
            }
        }
    }
    let info = match info {
        Ok(info) => info,
        Err(e) => {
            evidence["info"] = json!({ "error": e.to_string() });
            return if signals.is_empty() {
                ProbeOutput::error(format!("pgbackrest info gave no answer: {e}"))
                    .with_evidence(evidence)
            } else {
                ProbeOutput::problem(words.join("; "), signals).with_evidence(evidence)
            };
        }
    };
    let Some(st) = info.iter().find(|i| i.name == stanza) else {
        evidence["info"] = json!({ "stanzas": info.iter().map(|i| &i.name).collect::<Vec<_>>() });
        words.push(format!("pgbackrest info does not list stanza {stanza}"));
        signals.push(Signal::RepositoryUnhealthy {
            stanza: stanza.clone(),
            code: 1,
            message: "stanza not listed".into(),
        });
        return ProbeOutput::problem(words.join("; "), signals).with_evidence(evidence);
    };
    let repo_status = st.repo_status(repo);
    let newest = st.newest(repo);
    let newest_age = newest.map(|b| now.timestamp() - b.timestamp.stop);
    evidence["info"] = json!({
        "status": { "code": st.status.code, "message": st.status.message },
        "repo_status": repo_status.map(|r| json!({ "code": r.code, "message": r.message })),
        "backups": st.backup.iter().filter(|b| b.database.repo_key == repo).count(),
        "newest": newest.map(|b| json!({
            "label": b.label, "type": b.kind,
            "stop": DateTime::from_timestamp(b.timestamp.stop, 0),
            "age_seconds": newest_age,
        })),
        "archive": st.archive.iter().filter(|a| a.database.repo_key == repo)
            .map(|a| json!({ "id": a.id, "min": a.min, "max": a.max })).collect::<Vec<_>>(),
    });
    // A repository's own status is the more precise one; the stanza's sums up every repository.
    let unhealthy = repo_status
        .filter(|r| r.code != 0)
        .or(Some(&st.status).filter(|s| s.code != 0));
    match unhealthy {
        // "no valid backups" is the stale-backup finding below, in the RPO's words.
        Some(u) if u.code != 2 => {
            words.push(format!(
                "stanza {stanza}: {} (status {})",
                u.message, u.code
            ));
            signals.push(Signal::RepositoryUnhealthy {
                stanza: stanza.clone(),
                code: u.code,
                message: u.message.clone(),
            });
        }
        _ => {}
    }
    let rpo = i64::try_from(rpo_hours).unwrap_or(i64::MAX / 3600) * 3600;
    match newest_age {
        Some(age) if age <= rpo => words.push(format!(
            "newest backup {} {} old",
            newest.map(|b| b.label.as_str()).unwrap_or_default(),
            crate::domain::duration::human(age)
        )),
        age => {
            let sig = Signal::RepositoryBackupStale {
                stanza: stanza.clone(),
                age_seconds: age,
                rpo_hours,
            };
            words.push(crate::domain::diagnosis::describe(&sig));
            signals.push(sig);
        }
    }
    match metric {
        None => {}
        Some(Err(e)) => evidence["metric"] = json!({ "error": e.to_string() }),
        Some(Ok(value)) => {
            let side = |t: Option<i64>| {
                t.and_then(|t| DateTime::from_timestamp(t, 0))
                    .map_or(Side::None, Side::At)
            };
            let metric_side = side(value.map(|v| v as i64));
            let repo_side = side(newest.map(|b| b.timestamp.stop));
            evidence["metric"] = json!({ "query": s.pgbackrest.freshness_metric, "last_success": value.and_then(|v| DateTime::from_timestamp(v as i64, 0)) });
            if let Some(d) = freshness::cross_check(metric_side, repo_side, now, rpo_hours) {
                let sig = Signal::FreshnessDisagreement {
                    metric_age_seconds: d.metric_age_seconds,
                    repository_age_seconds: d.repository_age_seconds,
                    rpo_hours,
                };
                words.push(crate::domain::diagnosis::describe(&sig));
                signals.push(sig);
            }
        }
    }
    let summary = words.join("; ");
    if signals.is_empty() {
        ProbeOutput::ok(summary).with_evidence(evidence)
    } else {
        ProbeOutput::problem(summary, signals).with_evidence(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::finding::Status;
    use crate::infra::pgbackrest::parse_info;

    fn info(stop: i64) -> Vec<StanzaInfo> {
        parse_info(&format!(
            r#"[{{"name":"main","status":{{"code":0,"message":"ok"}},"repo":[{{"key":1,"status":{{"code":0,"message":"ok"}}}}],
            "archive":[{{"id":"15-1","min":"000000010000000000000001","max":"000000010000000000000004","database":{{"repo-key":1}}}}],
            "backup":[{{"label":"20261208-010000F","type":"full","timestamp":{{"start":{},"stop":{stop}}},"error":false,"database":{{"repo-key":1}}}}]}}]"#,
            stop - 60
        ))
        .unwrap()
    }

    fn settings() -> Settings {
        Settings::from_toml("[backup]\nsource = \"pgbackrest\"\n[pgbackrest]\nstanza = \"main\"")
            .unwrap()
    }

    #[test]
    fn a_run_that_must_write_nothing_skips_check_and_says_so() {
        let now = Utc::now();
        let out = judge(
            &settings(),
            Ok(info(now.timestamp() - 3600)),
            Err("dry run"),
            None,
            now,
        );
        assert_eq!(out.status, Status::Ok, "{}", out.summary);
        assert_eq!(out.evidence["check"]["skipped"], "dry run");
        assert_eq!(out.evidence["info"]["newest"]["label"], "20261208-010000F");
    }

    #[test]
    fn a_newest_backup_older_than_the_rpo_is_stale_in_the_rpos_words() {
        let now = Utc::now();
        let out = judge(
            &settings(),
            Ok(info(now.timestamp() - 50 * 3600)),
            Err("replay"),
            None,
            now,
        );
        assert_eq!(out.status, Status::Problem);
        assert!(
            out.summary.contains(
                "the newest backup of stanza main in the repository is 50 h old (RPO 24 h)"
            ),
            "{}",
            out.summary
        );
    }
}
