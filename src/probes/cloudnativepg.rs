//! `cloudnativepg`: the CloudNativePG source's `Cluster` (group `postgresql.cnpg.io`, v1), read
//! through the Kubernetes API as the service's ServiceAccount and never written: the Cluster's
//! status (conditions `ContinuousArchiving` and `LastBackupSucceeded`, `lastSuccessfulBackup`,
//! `lastFailedBackup`, `firstRecoverabilityPoint`), its newest `Backup` (by creation) and its
//! `ScheduledBackup`s. Archiving that fails, a newest backup that failed, no completed backup
//! within `notify.rpo_hours` and a suspended schedule are each a signal.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{json, Value};

use super::{Probe, ProbeContext, ProbeOutput, Signal};
use crate::config::Settings;

/// CloudNativePG's API group.
pub const GROUP: &str = "postgresql.cnpg.io";

pub struct CloudNativePg;

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural)
}

/// Words for a refused or failed read: a 403 names the permission and the grant that gives it.
fn read_error(verb: &str, plural: &str, namespace: &str, e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) if r.code == 403 => format!(
            "the service's ServiceAccount may not {verb} {plural}.{GROUP} in namespace \
             {namespace} (403 Forbidden): grant deploy/components/cloudnativepg"
        ),
        kube::Error::Api(r) if r.code == 404 && plural != "clusters" => format!(
            "the API server does not serve {plural}.{GROUP} (404): are CloudNativePG's CRDs \
             installed?"
        ),
        e => format!("reading {plural}.{GROUP} in namespace {namespace} failed: {e}"),
    }
}

/// The objects of `list` that belong to Cluster `cluster` (`spec.cluster.name`).
fn of_cluster(list: Vec<DynamicObject>, cluster: &str) -> Vec<Value> {
    list.into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .filter(|o| o["spec"]["cluster"]["name"] == cluster)
        .collect()
}

impl Probe for CloudNativePg {
    fn name(&self) -> &'static str {
        "cloudnativepg"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let Some(client) = ctx.kube.clone() else {
                return ProbeOutput::skipped("no Kubernetes API configured");
            };
            let ns = ctx.settings.kubernetes.namespace.clone();
            let name = ctx.settings.cloudnativepg.cluster.clone();
            let api = |kind, plural| {
                Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource(kind, plural))
            };
            let (clusters, backups, schedules) = (
                api("Cluster", "clusters"),
                api("Backup", "backups"),
                api("ScheduledBackup", "scheduledbackups"),
            );
            let lp = ListParams::default();
            let (cluster, backups, schedules) = tokio::join!(
                clusters.get_opt(&name),
                backups.list(&lp),
                schedules.list(&lp)
            );
            let cluster = match cluster {
                Ok(Some(c)) => serde_json::to_value(c).unwrap_or_default(),
                Ok(None) => {
                    return ProbeOutput::error(format!(
                        "CloudNativePG Cluster {name} does not exist in namespace {ns}"
                    ))
                }
                Err(e) => return ProbeOutput::error(read_error("get", "clusters", &ns, &e)),
            };
            let backups = match backups {
                Ok(l) => of_cluster(l.items, &name),
                Err(e) => return ProbeOutput::error(read_error("list", "backups", &ns, &e)),
            };
            let schedules = match schedules {
                Ok(l) => of_cluster(l.items, &name),
                Err(e) => {
                    return ProbeOutput::error(read_error("list", "scheduledbackups", &ns, &e))
                }
            };
            judge(&ctx.settings, &cluster, backups, &schedules, Utc::now())
        })
    }
}

/// A condition of the Cluster's status by type: (status, reason, message).
fn condition<'a>(cluster: &'a Value, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let c = cluster["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default();
    Some((s("status"), s("reason"), s("message")))
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()?.parse().ok()
}

/// Turns the Cluster, its Backups and its ScheduledBackups into the finding.
pub fn judge(
    s: &Settings,
    cluster: &Value,
    mut backups: Vec<Value>,
    schedules: &[Value],
    now: DateTime<Utc>,
) -> ProbeOutput {
    let name = s.cloudnativepg.cluster.clone();
    let rpo_hours = s.notify.rpo_hours;
    let status = &cluster["status"];
    let mut signals = Vec::new();
    let mut words = Vec::new();
    let archiving = condition(cluster, "ContinuousArchiving");
    if let Some(("False", reason, message)) = archiving {
        signals.push(Signal::ClusterArchivingFailing {
            cluster: name.clone(),
            reason: reason.to_owned(),
            message: message.to_owned(),
        });
    }
    let last_backup = condition(cluster, "LastBackupSucceeded");
    if let Some(("False", _, message)) = last_backup {
        words.push(format!("LastBackupSucceeded is False: {message}"));
    }
    // Newest by creation; the name breaks ties within a second.
    backups.sort_by(|a, b| {
        let key = |o: &Value| {
            (
                time(&o["metadata"]["creationTimestamp"]),
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    let newest = backups.last();
    let backup_name = |b: &Value| {
        b["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(b) = newest.filter(|b| b["status"]["phase"] == "failed") {
        signals.push(Signal::ClusterBackupFailed {
            cluster: name.clone(),
            backup: backup_name(b),
            error: b["status"]["error"]
                .as_str()
                .unwrap_or("no error recorded")
                .to_owned(),
        });
    }
    let completed = backups
        .iter()
        .filter(|b| b["status"]["phase"] == "completed")
        .filter_map(|b| time(&b["status"]["stoppedAt"]))
        .chain(time(&status["lastSuccessfulBackup"]))
        .max();
    let age = completed.map(|t| (now - t).num_seconds());
    let rpo = i64::try_from(rpo_hours).unwrap_or(i64::MAX / 3600) * 3600;
    match age {
        Some(age) if age <= rpo => words.push(format!(
            "newest completed backup {} old",
            crate::domain::duration::human(age)
        )),
        age => signals.push(Signal::ClusterBackupStale {
            cluster: name.clone(),
            age_seconds: age,
            rpo_hours,
        }),
    }
    for sb in schedules.iter().filter(|sb| sb["spec"]["suspend"] == true) {
        signals.push(Signal::ScheduledBackupSuspended {
            scheduled_backup: backup_name(sb),
        });
    }
    let cond = |c: Option<(&str, &str, &str)>| {
        c.map(|(st, reason, message)| json!({ "status": st, "reason": reason, "message": message }))
    };
    let evidence = json!({
        "cluster": name,
        "conditions": {
            "ContinuousArchiving": cond(archiving),
            "LastBackupSucceeded": cond(last_backup),
        },
        "last_successful_backup": status["lastSuccessfulBackup"],
        "last_failed_backup": status["lastFailedBackup"],
        "first_recoverability_point": status["firstRecoverabilityPoint"],
        "backups": backups.len(),
        "newest_backup": newest.map(|b| json!({
            "name": backup_name(b),
            "phase": b["status"]["phase"],
            "error": b["status"]["error"],
            "stopped_at": b["status"]["stoppedAt"],
        })),
        "newest_completed_age_seconds": age,
        "scheduled_backups": schedules.iter().map(|sb| json!({
            "name": backup_name(sb),
            "schedule": sb["spec"]["schedule"],
            "suspend": sb["spec"]["suspend"].as_bool().unwrap_or(false),
        })).collect::<Vec<_>>(),
    });
    let described: Vec<String> = signals
        .iter()
        .map(crate::domain::diagnosis::describe)
        .collect();
    let summary = described
        .into_iter()
        .chain(words)
        .collect::<Vec<_>>()
        .join("; ");
    if signals.is_empty() {
        ProbeOutput::ok(format!("Cluster {name}: {summary}")).with_evidence(evidence)
    } else {
        ProbeOutput::problem(summary, signals).with_evidence(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::finding::Status;

    fn settings() -> Settings {
        Settings::from_toml(
            "[backup]\nsource = \"cloudnativepg\"\n[cloudnativepg]\ncluster = \"ledger-db\"",
        )
        .unwrap()
    }

    fn backup(name: &str, created: &str, phase: &str, stopped: &str) -> Value {
        json!({
            "metadata": { "name": name, "creationTimestamp": created },
            "spec": { "cluster": { "name": "ledger-db" } },
            "status": { "phase": phase, "stoppedAt": stopped, "error": "can't upload: AccessDenied" },
        })
    }

    #[test]
    fn the_newest_backup_by_creation_decides_and_an_old_success_is_stale() {
        let now: DateTime<Utc> = "2026-12-08T12:00:00Z".parse().unwrap();
        let cluster = json!({ "status": { "conditions": [
            { "type": "ContinuousArchiving", "status": "True", "reason": "ContinuousArchivingSuccess", "message": "" }
        ]}});
        let backups = vec![
            backup("b-2", "2026-12-06T01:00:00Z", "failed", ""),
            backup(
                "b-1",
                "2026-12-05T01:00:00Z",
                "completed",
                "2026-12-05T01:10:00Z",
            ),
        ];
        let out = judge(&settings(), &cluster, backups, &[], now);
        assert_eq!(out.status, Status::Problem);
        assert_eq!(
            out.summary,
            "the newest Backup b-2 of CloudNativePG Cluster ledger-db failed: can't upload: \
             AccessDenied; the newest completed backup of CloudNativePG Cluster ledger-db is 3 d \
             10 h old (RPO 24 h)"
        );
    }
}
