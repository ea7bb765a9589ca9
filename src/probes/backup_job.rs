//! `backup_job`: the runbook's "Check Backup Job Status" and "Analyze Job Failure" — the newest
//! backup Job, its conditions, its pods' fates, and its last log lines matched against the
//! runbook's error patterns.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::Api;

use super::{Probe, ProbeContext, ProbeOutput, Signal};
use crate::domain::patterns::{self, LogPattern};

pub struct BackupJob;

/// Matched lines kept per pattern and in all, so a log full of one error stays readable.
const PER_PATTERN: usize = 3;
const TOTAL: usize = 20;

/// Waiting reasons that mean the container will not start by itself.
const STUCK: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "InvalidImageName",
];

/// What a pod's status says about why it failed, if it did.
fn pod_failure(pod: &Pod) -> Option<(String, String)> {
    let status = pod.status.as_ref()?;
    if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        return Some((
            reason.to_owned(),
            status.message.clone().unwrap_or_default(),
        ));
    }
    for cs in status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
    {
        let state = cs.state.as_ref();
        if let Some(t) = state
            .and_then(|s| s.terminated.as_ref())
            .filter(|t| t.exit_code != 0)
        {
            let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
            return Some((
                reason,
                format!("container {} exited with code {}", cs.name, t.exit_code),
            ));
        }
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            if let Some(r) = w.reason.as_deref().filter(|r| STUCK.contains(r)) {
                return Some((r.to_owned(), w.message.clone().unwrap_or_default()));
            }
        }
    }
    None
}

/// Classifies log lines; returns the signals (bounded) and the matched lines for evidence.
pub fn classify_logs(text: &str) -> Vec<Signal> {
    let mut per: HashMap<LogPattern, usize> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        for pattern in patterns::classify(line) {
            let n = per.entry(pattern).or_default();
            if *n < PER_PATTERN && out.len() < TOTAL {
                *n += 1;
                out.push(Signal::LogMatch {
                    pattern,
                    line: patterns::redact(line.trim()),
                });
            }
        }
    }
    out
}

impl Probe for BackupJob {
    fn name(&self) -> &'static str {
        "backup_job"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let Some(client) = ctx.kube.clone() else {
                return ProbeOutput::skipped("no Kubernetes API configured");
            };
            let k = &ctx.settings.kubernetes;
            let jobs: Api<Job> = Api::namespaced(client.clone(), &k.namespace);
            let selector = ListParams::default().labels(&k.backup_job_selector);
            let (listed, (cron_evidence, cron_signals)) = tokio::join!(
                jobs.list(&selector),
                super::schedule::check(client.clone(), k)
            );
            let cron_note = cron_signals
                .iter()
                .map(|s| format!("; {}", crate::domain::diagnosis::describe(s)))
                .collect::<String>();
            let list = match listed {
                Ok(l) => l,
                Err(e) if cron_signals.is_empty() => {
                    return ProbeOutput::error(format!("listing backup Jobs failed: {e}"))
                }
                Err(e) => {
                    return ProbeOutput::problem(
                        format!("listing backup Jobs failed: {e}{cron_note}"),
                        cron_signals,
                    )
                    .with_evidence(serde_json::json!({ "cronjob": cron_evidence }))
                }
            };
            let Some(job) = list.items.into_iter().max_by(|a, b| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            }) else {
                let mut signals = vec![Signal::NoBackupJob];
                signals.extend(cron_signals);
                return ProbeOutput::problem(
                    format!(
                        "No Job labelled {} in {}: the backup CronJob has not run{cron_note}",
                        k.backup_job_selector, k.namespace
                    ),
                    signals,
                )
                .with_evidence(serde_json::json!({ "cronjob": cron_evidence }));
            };
            let name = job.metadata.name.clone().unwrap_or_default();
            let status = job.status.clone().unwrap_or_default();
            let conditions: Vec<serde_json::Value> = status
                .conditions
                .iter()
                .flatten()
                .map(|c| serde_json::json!({"type": c.type_, "status": c.status, "reason": c.reason, "message": c.message}))
                .collect();
            let failed_condition = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .map(|c| c.reason.clone().unwrap_or_else(|| "Failed".into()));
            let succeeded = status.succeeded.unwrap_or(0) > 0;
            let mut signals = cron_signals;
            if let Some(reason) = &failed_condition {
                signals.push(Signal::JobFailed {
                    job: name.clone(),
                    reason: reason.clone(),
                });
            }

            let pods: Api<Pod> = Api::namespaced(client, &k.namespace);
            let mut evidence = serde_json::json!({
                "job": name,
                "created": job.metadata.creation_timestamp.as_ref().map(|t| t.0),
                "active": status.active.unwrap_or(0),
                "succeeded": status.succeeded.unwrap_or(0),
                "failed": status.failed.unwrap_or(0),
                "completion_time": status.completion_time.as_ref().map(|t| t.0),
                "conditions": conditions,
                "cronjob": cron_evidence,
            });
            match pods
                .list(&ListParams::default().labels(&format!("job-name={name}")))
                .await
            {
                Err(e) => evidence["pods_error"] = serde_json::json!(e.to_string()),
                Ok(list) => {
                    let mut pod_list = list.items;
                    pod_list.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                    let mut shown = Vec::new();
                    for pod in &pod_list {
                        let pod_name = pod.metadata.name.clone().unwrap_or_default();
                        let phase = pod
                            .status
                            .as_ref()
                            .and_then(|s| s.phase.clone())
                            .unwrap_or_default();
                        let failure = pod_failure(pod);
                        if let Some((reason, message)) = &failure {
                            let ephemeral =
                                reason == "Evicted" && message.to_lowercase().contains("ephemeral");
                            signals.push(if ephemeral {
                                Signal::EphemeralStorageExhausted {
                                    pod: pod_name.clone(),
                                }
                            } else {
                                Signal::PodFailed {
                                    pod: pod_name.clone(),
                                    reason: reason.clone(),
                                    message: message.clone(),
                                }
                            });
                        }
                        shown.push(serde_json::json!({"pod": pod_name, "phase": phase, "failure": failure.map(|f| f.0)}));
                    }
                    evidence["pods"] = serde_json::json!(shown);
                    if let Some(newest) = pod_list.last().and_then(|p| p.metadata.name.clone()) {
                        let params = LogParams {
                            tail_lines: Some(k.log_lines),
                            ..LogParams::default()
                        };
                        match pods.logs(&newest, &params).await {
                            Ok(text) => {
                                let matched = classify_logs(&text);
                                evidence["log_pod"] = serde_json::json!(newest);
                                evidence["log_lines_read"] =
                                    serde_json::json!(text.lines().count());
                                evidence["matched_lines"] = serde_json::json!(matched
                                    .iter()
                                    .filter_map(|s| match s {
                                        Signal::LogMatch { line, .. } => Some(line.clone()),
                                        _ => None,
                                    })
                                    .collect::<Vec<_>>());
                                signals.extend(matched);
                            }
                            Err(e) => evidence["log_error"] = serde_json::json!(e.to_string()),
                        }
                    }
                }
            }

            let matched = signals
                .iter()
                .filter(|s| matches!(s, Signal::LogMatch { .. }))
                .count();
            let state = if let Some(reason) = &failed_condition {
                format!("Job {name} failed ({reason})")
            } else if succeeded {
                format!("Job {name} succeeded")
            } else if status.active.unwrap_or(0) > 0 {
                format!("Job {name} is running")
            } else {
                format!("Job {name} has not finished")
            };
            let mut summary = state;
            if matched > 0 {
                let first = signals.iter().find_map(|s| match s {
                    Signal::LogMatch { line, .. } => Some(line.clone()),
                    _ => None,
                });
                summary.push_str(&format!(
                    "; {matched} log line(s) match runbook errors, e.g. \"{}\"",
                    first.unwrap_or_default()
                ));
            }
            let pod_note = signals.iter().find_map(|s| match s {
                Signal::PodFailed { pod, reason, .. } => Some(format!("; pod {pod}: {reason}")),
                Signal::EphemeralStorageExhausted { pod } => {
                    Some(format!("; pod {pod}: evicted, out of ephemeral storage"))
                }
                _ => None,
            });
            summary.push_str(&pod_note.unwrap_or_default());
            summary.push_str(&cron_note);
            if signals.is_empty() {
                ProbeOutput::ok(summary).with_evidence(evidence)
            } else {
                ProbeOutput::problem(summary, signals).with_evidence(evidence)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_matches_are_bounded_per_pattern_and_redacted() {
        let mut text = String::from("starting backup\nPGPASSWORD=hunter2 pg_dump: error: connection to server failed: Connection refused\n");
        for _ in 0..10 {
            text.push_str("Connection refused\n");
        }
        let s = classify_logs(&text);
        assert_eq!(s.len(), PER_PATTERN);
        let Signal::LogMatch { pattern, line } = &s[0] else {
            panic!("{s:?}")
        };
        assert_eq!(*pattern, LogPattern::ConnectionRefused);
        assert!(
            !line.contains("hunter2") && line.contains("Connection refused"),
            "{line}"
        );
    }

    /// The kube-rs way (controller-rs): a mock API server that checks the exact request.
    #[tokio::test]
    async fn the_newest_job_is_listed_by_its_label_selector() {
        let (service, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = kube::Client::new(service, "link-services");
        let verifier = tokio::spawn(async move {
            let (req, send) =
                tokio::time::timeout(std::time::Duration::from_secs(1), handle.next_request())
                    .await
                    .expect("the probe lists Jobs")
                    .expect("a request");
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(
                req.uri().to_string(),
                "/apis/batch/v1/namespaces/link-services/jobs?&labelSelector=app%3Dpostgres-backup"
            );
            let list = serde_json::json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {"resourceVersion": "1"}, "items": []});
            send.send_response(
                http::Response::builder()
                    .body(kube::client::Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
        });
        let settings = crate::config::Settings::from_toml("").unwrap();
        let ctx = Arc::new(ProbeContext::new(
            Arc::new(settings),
            Some(client),
            reqwest::Client::new(),
        ));

        let out = BackupJob.run(ctx).await;

        verifier.await.unwrap();
        assert_eq!(out.signals, vec![Signal::NoBackupJob]);
        assert!(out.summary.contains("has not run"), "{}", out.summary);
    }
}
