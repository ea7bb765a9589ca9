//! `primary`: the PostgreSQL primary as Kubernetes sees it — the runbook's "Verify PostgreSQL pods
//! are running" and "Check PostgreSQL service status": StatefulSet readiness, its pods, and
//! whether the Service has ready endpoints.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Endpoints, Pod};
use kube::api::ListParams;
use kube::Api;

use super::{Probe, ProbeContext, ProbeOutput, Signal};

pub struct Primary;

fn pod_state(pod: &Pod) -> (String, bool, Option<String>) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        });
    (name, ready, waiting)
}

impl Probe for Primary {
    fn name(&self) -> &'static str {
        "primary"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let Some(client) = ctx.kube.clone() else {
                return ProbeOutput::skipped("no Kubernetes API configured");
            };
            let k = &ctx.settings.kubernetes;
            let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &k.namespace);
            let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), &k.namespace);
            let (set, eps) = tokio::join!(
                sets.get_opt(&k.primary_statefulset),
                endpoints.get_opt(&k.primary_service)
            );
            let mut problems = Vec::new();
            let mut evidence = serde_json::json!({ "statefulset": k.primary_statefulset, "service": k.primary_service });

            match set {
                Err(e) => {
                    return ProbeOutput::error(format!(
                        "reading StatefulSet {} failed: {e}",
                        k.primary_statefulset
                    ))
                }
                Ok(None) => problems.push(format!(
                    "StatefulSet {} does not exist",
                    k.primary_statefulset
                )),
                Ok(Some(set)) => {
                    let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let ready = set
                        .status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0);
                    evidence["replicas"] = serde_json::json!(want);
                    evidence["ready_replicas"] = serde_json::json!(ready);
                    if ready < want {
                        problems.push(format!(
                            "StatefulSet {} has {ready}/{want} ready replicas",
                            k.primary_statefulset
                        ));
                    }
                    let selector = set
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.match_labels.as_ref())
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    if !selector.is_empty() {
                        let pods: Api<Pod> = Api::namespaced(client, &k.namespace);
                        match pods.list(&ListParams::default().labels(&selector)).await {
                            Ok(list) => {
                                let states: Vec<_> = list.items.iter().map(pod_state).collect();
                                for (name, ready, waiting) in &states {
                                    if !ready {
                                        let why = waiting
                                            .as_deref()
                                            .map(|w| format!(" ({w})"))
                                            .unwrap_or_default();
                                        problems.push(format!("pod {name} is not ready{why}"));
                                    }
                                }
                                evidence["pods"] = serde_json::json!(states
                                    .iter()
                                    .map(|(n, r, w)| serde_json::json!({"pod": n, "ready": r, "waiting": w}))
                                    .collect::<Vec<_>>());
                            }
                            Err(e) => evidence["pods_error"] = serde_json::json!(e.to_string()),
                        }
                    }
                }
            }
            match eps {
                Err(e) => evidence["endpoints_error"] = serde_json::json!(e.to_string()),
                Ok(None) => problems.push(format!(
                    "Service {} has no Endpoints object",
                    k.primary_service
                )),
                Ok(Some(ep)) => {
                    let ready: usize = ep
                        .subsets
                        .iter()
                        .flatten()
                        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                        .sum();
                    evidence["ready_endpoints"] = serde_json::json!(ready);
                    if ready == 0 {
                        problems.push(format!(
                            "Service {} has no ready endpoints",
                            k.primary_service
                        ));
                    }
                }
            }
            if problems.is_empty() {
                ProbeOutput::ok(format!(
                    "Primary {} is ready and its Service has endpoints",
                    k.primary_statefulset
                ))
                .with_evidence(evidence)
            } else {
                let detail = problems.join("; ");
                ProbeOutput::problem(detail.clone(), vec![Signal::PrimaryNotReady { detail }])
                    .with_evidence(evidence)
            }
        })
    }
}
