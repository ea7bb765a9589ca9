//! deploy/ applied to the test cluster as its admin (server-side apply), as
//! `kubectl apply -k deploy/` would: rendered by `kubectl kustomize`, then each object sent to
//! the API server, which validates it.

use std::sync::OnceLock;

use serde_json::Value;

/// The resource (plural) of each kind deploy/ holds, and whether it is namespaced. The
/// prometheus-operator kinds (ServiceMonitor, PrometheusRule) are left out: their CRDs are not
/// installed in the test cluster.
const KINDS: &[(&str, &str, bool)] = &[
    ("ServiceAccount", "serviceaccounts", true),
    ("ConfigMap", "configmaps", true),
    ("Service", "services", true),
    ("Role", "roles", true),
    ("RoleBinding", "rolebindings", true),
    ("ClusterRole", "clusterroles", false),
    ("ClusterRoleBinding", "clusterrolebindings", false),
    (
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        false,
    ),
    (
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        false,
    ),
    ("Deployment", "deployments", true),
    ("NetworkPolicy", "networkpolicies", true),
    ("PodDisruptionBudget", "poddisruptionbudgets", true),
    ("Namespace", "namespaces", false),
];

/// `kubectl kustomize DIR` (relative to the crate), as JSON objects.
pub fn render(dir: &str) -> Result<Vec<Value>, String> {
    let path = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("kubectl")
        .args(["kustomize", &path])
        .output()
        .map_err(|e| {
            format!("running kubectl kustomize {dir} (scripts/test.sh provides kubectl): {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            objects.push(v);
        }
    }
    Ok(objects)
}

/// The API path of `obj`'s collection, or `None` for a kind the test cluster does not serve.
fn collection(obj: &Value) -> Option<String> {
    let kind = obj["kind"].as_str()?;
    let (_, plural, namespaced) = KINDS.iter().find(|(k, _, _)| *k == kind)?;
    let api_version = obj["apiVersion"].as_str()?;
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    Some(if *namespaced {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        format!("{prefix}/namespaces/{ns}/{plural}")
    } else {
        format!("{prefix}/{plural}")
    })
}

/// Server-side applies `obj` as the tests' field manager; `Ok(false)` for a kind the test
/// cluster does not serve.
pub async fn apply(client: &kube::Client, obj: &Value) -> Result<bool, String> {
    let Some(coll) = collection(obj) else {
        return Ok(false);
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let req = http::Request::patch(format!(
        "{coll}/{name}?fieldManager=backup-remediator-tests&force=true"
    ))
    .header("content-type", "application/apply-patch+yaml")
    .body(serde_json::to_vec(obj).unwrap())
    .unwrap();
    client
        .request::<Value>(req)
        .await
        .map_err(|e| format!("applying {} {name}: {e}", obj["kind"]))?;
    Ok(true)
}

/// deploy/ (the service's namespace, ServiceAccounts, Role, ClusterRole, admission policy, …).
pub async fn deploy(admin: &kube::Client) -> Result<(), String> {
    let objects = render("deploy")?;
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": super::SERVICE_NS}});
    apply(admin, &ns).await?;
    for obj in &objects {
        apply(admin, obj).await?;
    }
    Ok(())
}

/// deploy/components/targets/per-namespace: what each target namespace gets (the Role and
/// RoleBinding of the service there, the manual-backup ServiceAccount), rendered once.
pub fn per_namespace() -> &'static [Value] {
    static OBJECTS: OnceLock<Vec<Value>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        render("deploy/components/targets/per-namespace")
            .expect("rendering the per-namespace objects")
    })
}
