//! `disk`: how full the primary's data volume is (kubelet volume stats in Prometheus) against the
//! threshold, and whether its StorageClass would allow the volume to be expanded.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Probe, ProbeContext, ProbeOutput, Signal};
use crate::infra::prometheus::{self, label_value};

pub struct Disk;

/// What the PVC and its StorageClass say (for evidence and, later, expansion).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VolumeClaim {
    pub name: String,
    pub storage_class: Option<String>,
    pub requested: Option<String>,
    pub capacity: Option<String>,
    /// `allowVolumeExpansion` of the StorageClass; `None` when unknown.
    pub expandable: Option<bool>,
}

/// Reads the PVC and its StorageClass.
pub async fn volume_claim(
    client: &kube::Client,
    namespace: &str,
    pvc: &str,
) -> Result<Option<VolumeClaim>, kube::Error> {
    let pvcs: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(client.clone(), namespace);
    let Some(claim) = pvcs.get_opt(pvc).await? else {
        return Ok(None);
    };
    let spec = claim.spec.unwrap_or_default();
    let requested = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").map(|q| q.0.clone()));
    let capacity = claim
        .status
        .and_then(|s| s.capacity)
        .and_then(|c| c.get("storage").map(|q| q.0.clone()));
    let expandable = match &spec.storage_class_name {
        Some(sc) => {
            let classes: kube::Api<StorageClass> = kube::Api::all(client.clone());
            classes
                .get_opt(sc)
                .await?
                .map(|c| c.allow_volume_expansion.unwrap_or(false))
        }
        None => None,
    };
    Ok(Some(VolumeClaim {
        name: pvc.to_owned(),
        storage_class: spec.storage_class_name,
        requested,
        capacity,
        expandable,
    }))
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
}

impl Probe for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let k = &ctx.settings.kubernetes;
            let threshold = ctx.settings.disk.threshold_percent;
            let sel = format!(
                "{{namespace={},persistentvolumeclaim={}}}",
                label_value(&k.namespace),
                label_value(&k.primary_pvc)
            );
            let used_q = format!("max(kubelet_volume_stats_used_bytes{sel})");
            let cap_q = format!("max(kubelet_volume_stats_capacity_bytes{sel})");
            let url = &ctx.settings.prometheus.url;
            let claim = async {
                match &ctx.kube {
                    Some(c) => Some(volume_claim(c, &k.namespace, &k.primary_pvc).await),
                    None => None,
                }
            };
            let (used, cap, claim) = tokio::join!(
                prometheus::query(&ctx.http, url, &used_q),
                prometheus::query(&ctx.http, url, &cap_q),
                claim
            );

            let mut evidence =
                serde_json::json!({ "pvc": k.primary_pvc, "threshold_percent": threshold });
            let claim_known = match claim {
                Some(Ok(Some(c))) => {
                    evidence["claim"] = serde_json::to_value(&c).unwrap_or_default();
                    true
                }
                Some(Ok(None)) => {
                    evidence["claim"] =
                        serde_json::json!(format!("PVC {} not found", k.primary_pvc));
                    false
                }
                Some(Err(e)) => {
                    evidence["claim_error"] = serde_json::json!(e.to_string());
                    false
                }
                None => {
                    evidence["claim"] = serde_json::json!("no Kubernetes API configured");
                    false
                }
            };
            let usage = match (used, cap) {
                (Ok(u), Ok(c)) => match (u.first(), c.first()) {
                    (Some(u), Some(c)) if c.value > 0.0 => Some((u.value, c.value)),
                    _ => None,
                },
                (Err(e), _) | (_, Err(e)) => {
                    evidence["prometheus_error"] = serde_json::json!(e.to_string());
                    None
                }
            };
            let Some((used, capacity)) = usage else {
                let why = if evidence.get("prometheus_error").is_some() {
                    "Prometheus could not be asked"
                } else {
                    "no kubelet_volume_stats series for the PVC"
                };
                let summary = format!("Data volume usage unknown: {why}");
                return if claim_known {
                    ProbeOutput::skipped(summary).with_evidence(evidence)
                } else {
                    ProbeOutput::error(summary).with_evidence(evidence)
                };
            };
            let percent = (used / capacity * 1000.0).round() / 10.0;
            evidence["used_bytes"] = serde_json::json!(used);
            evidence["capacity_bytes"] = serde_json::json!(capacity);
            evidence["used_percent"] = serde_json::json!(percent);
            let line = format!(
                "Data volume {} is {percent}% full ({} of {})",
                k.primary_pvc,
                gib(used),
                gib(capacity)
            );
            if percent > threshold {
                ProbeOutput::problem(
                    format!("{line}, over the {threshold}% threshold"),
                    vec![Signal::VolumeOverThreshold {
                        pvc: k.primary_pvc.clone(),
                        percent,
                        threshold,
                    }],
                )
                .with_evidence(evidence)
            } else {
                ProbeOutput::ok(line).with_evidence(evidence)
            }
        })
    }
}
