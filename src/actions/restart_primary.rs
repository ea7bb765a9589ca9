//! `restart_primary`: `kubectl rollout restart statefulset/NAME` — the pod template's
//! `kubectl.kubernetes.io/restartedAt` annotation set to the time chosen in `prepare`. Applying
//! the same intent again sets the same value: no second rollout.

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::{json, Value};

use super::{ActionContext, ActionError};

pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

pub fn prepare() -> Value {
    json!({ "restartedAt": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true) })
}

pub async fn apply(ctx: &ActionContext, intent: &Value) -> Result<Value, ActionError> {
    let k = &ctx.settings.kubernetes;
    let at = intent["restartedAt"]
        .as_str()
        .ok_or(ActionError::Intent("restartedAt"))?;
    let api: Api<StatefulSet> = Api::namespaced(ctx.kube()?.clone(), &k.namespace);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}});
    api.patch(
        &k.primary_statefulset,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(ActionError::kube(format!(
        "patching StatefulSet {}",
        k.primary_statefulset
    )))?;
    Ok(json!({ "statefulset": k.primary_statefulset, "restartedAt": at }))
}
