//! `expand_pvc`: grow the primary's data PVC request by the policy's step, only when its
//! StorageClass allows expansion and the result stays within the ceiling. The intent is the
//! absolute new size, so applying it twice grows the volume once.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use super::{ActionContext, ActionError};
use crate::domain::quantity;
use crate::probes::disk::volume_claim;

pub async fn prepare(ctx: &ActionContext) -> Result<Value, ActionError> {
    let k = &ctx.settings.kubernetes;
    let limits = &ctx.policy.limits;
    let claim = volume_claim(ctx.kube()?, &k.namespace, &k.primary_pvc)
        .await
        .map_err(ActionError::kube(format!("reading PVC {}", k.primary_pvc)))?
        .ok_or_else(|| format!("PVC {} does not exist", k.primary_pvc))?;
    match claim.expandable {
        Some(true) => {}
        Some(false) => {
            return Err(format!(
            "StorageClass {} does not allow volume expansion (allowVolumeExpansion is not true)",
            claim.storage_class.unwrap_or_default()
        )
            .into())
        }
        None => {
            return Err(format!(
                "PVC {} has no readable StorageClass: expansion cannot be shown to be allowed",
                k.primary_pvc
            )
            .into())
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
        )
        .into());
    }
    Ok(
        json!({ "pvc": k.primary_pvc, "from": requested, "to": quantity::format(wanted),
               "storage_class": claim.storage_class }),
    )
}

pub async fn apply(ctx: &ActionContext, intent: &Value) -> Result<Value, ActionError> {
    let k = &ctx.settings.kubernetes;
    let to = intent["to"].as_str().ok_or(ActionError::Intent("size"))?;
    let wanted = quantity::parse(to).ok_or(ActionError::Intent("valid size"))?;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.kube()?.clone(), &k.namespace);
    let pvc = api
        .get(&k.primary_pvc)
        .await
        .map_err(ActionError::kube(format!("reading PVC {}", k.primary_pvc)))?;
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
    match api
        .patch(
            &k.primary_pvc,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {}
        // The API server's own refusal (its PersistentVolumeClaimResize admission: the class
        // does not allow expansion, the claim was not dynamically provisioned; validation: the
        // claim is not bound) is the answer, said as it said it.
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
            return Err(format!(
                "the API server refused to expand PVC {} ({} {}): {}",
                k.primary_pvc,
                e.code,
                e.reason,
                server_reason(&e.message)
            )
            .into())
        }
        Err(e) => return Err(ActionError::kube(format!("patching PVC {}", k.primary_pvc))(e)),
    }
    out["patched"] = json!(true);
    Ok(out)
}

/// The part of an API server refusal that says why: after the object's name
/// (`persistentvolumeclaims "x" is forbidden: …`, `PersistentVolumeClaim "x" is invalid: …`).
fn server_reason(message: &str) -> &str {
    ["is forbidden: ", "is invalid: "]
        .iter()
        .find_map(|m| message.split_once(m).map(|(_, why)| why))
        .unwrap_or(message)
}
