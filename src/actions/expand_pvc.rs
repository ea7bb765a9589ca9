//! `expand_pvc`: grow the primary's data PVC request by the policy's step, only when its
//! StorageClass allows expansion and the result stays within the ceiling. The intent is the
//! absolute new size, so applying it twice grows the volume once.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use super::ActionContext;
use crate::domain::quantity;
use crate::probes::disk::volume_claim;

pub async fn prepare(ctx: &ActionContext) -> Result<Value, String> {
    let k = &ctx.settings.kubernetes;
    let limits = &ctx.policy.limits;
    let claim = volume_claim(ctx.kube()?, &k.namespace, &k.primary_pvc)
        .await
        .map_err(|e| format!("reading PVC {}: {e}", k.primary_pvc))?
        .ok_or_else(|| format!("PVC {} does not exist", k.primary_pvc))?;
    match claim.expandable {
        Some(true) => {}
        Some(false) => {
            return Err(format!(
            "StorageClass {} does not allow volume expansion (allowVolumeExpansion is not true)",
            claim.storage_class.unwrap_or_default()
        ))
        }
        None => {
            return Err(format!(
                "PVC {} has no readable StorageClass: expansion cannot be shown to be allowed",
                k.primary_pvc
            ))
        }
    }
    let requested = claim.requested.clone().unwrap_or_default();
    let current = quantity::parse(&requested)
        .ok_or_else(|| format!("PVC {} requests {requested:?}, not a size", k.primary_pvc))?;
    let step = quantity::parse(&limits.pvc_growth_step).unwrap_or(0);
    let ceiling = quantity::parse(&limits.pvc_ceiling).unwrap_or(0);
    let wanted = current + step;
    if wanted > ceiling {
        return Err(format!(
            "growing {} from {} by {} would exceed the policy's ceiling of {}",
            k.primary_pvc, requested, limits.pvc_growth_step, limits.pvc_ceiling
        ));
    }
    Ok(
        json!({ "pvc": k.primary_pvc, "from": requested, "to": quantity::format(wanted),
               "storage_class": claim.storage_class }),
    )
}

pub async fn apply(ctx: &ActionContext, intent: &Value) -> Result<Value, String> {
    let k = &ctx.settings.kubernetes;
    let to = intent["to"]
        .as_str()
        .ok_or("the step's intent has no size")?;
    let wanted = quantity::parse(to).ok_or("the step's intent has no valid size")?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.kube()?.clone(), &k.namespace);
    let pvc = api
        .get(&k.primary_pvc)
        .await
        .map_err(|e| format!("reading PVC {}: {e}", k.primary_pvc))?;
    let now = pvc
        .spec
        .and_then(|s| s.resources)
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").and_then(|q| quantity::parse(&q.0)))
        .unwrap_or(0);
    let mut out = intent.clone();
    if now >= wanted {
        out["patched"] = json!(false);
        out["note"] = json!("the claim already requests this size");
        return Ok(out);
    }
    let patch = json!({"spec": {"resources": {"requests": {"storage": to}}}});
    api.patch(
        &k.primary_pvc,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| format!("patching PVC {}: {e}", k.primary_pvc))?;
    out["patched"] = json!(true);
    Ok(out)
}
