//! The Kubernetes client, and the one list of every Kubernetes API call the service makes (the
//! RBAC Role in deploy/ is checked against it: a new call must be added here).

use std::time::Duration;

use crate::config::KubeSettings;

/// One Kubernetes API call: verb, API group ("" = core), resource (with subresource), and the
/// remediation action that alone needs it (`None`: needed whatever the policy says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    /// The action whose policy must not be `never` for this call to be made, if any.
    pub only_for_action: Option<&'static str>,
    /// The backup source (`backup.source`) whose probe alone makes this call, if any.
    pub only_for_source: Option<&'static str>,
}

const fn call(verb: &'static str, group: &'static str, resource: &'static str) -> ApiCall {
    ApiCall {
        verb,
        group,
        resource,
        only_for_action: None,
        only_for_source: None,
    }
}

const fn call_for(
    action: &'static str,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
) -> ApiCall {
    ApiCall {
        verb,
        group,
        resource,
        only_for_action: Some(action),
        only_for_source: None,
    }
}

const fn call_for_source(
    source: &'static str,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
) -> ApiCall {
    ApiCall {
        verb,
        group,
        resource,
        only_for_action: None,
        only_for_source: Some(source),
    }
}

/// Every call the service makes, namespaced to `kubernetes.namespace` except StorageClasses.
pub const KUBE_API_CALLS: &[ApiCall] = &[
    // Probes.
    call("get", "", "secrets"),
    call("list", "batch", "jobs"),
    call("list", "", "pods"),
    call("get", "", "pods/log"),
    call("get", "apps", "statefulsets"),
    call("get", "", "endpoints"),
    call("get", "", "persistentvolumeclaims"),
    call("get", "storage.k8s.io", "storageclasses"),
    // Backup Jobs: rerun from the CronJob (verification) and the manual backup; watched to the end.
    call("get", "batch", "cronjobs"),
    call("create", "batch", "jobs"),
    call("get", "batch", "jobs"),
    call("watch", "batch", "jobs"),
    // A verification Job past its deadline (only Jobs it created: deploy/'s admission policy).
    call("delete", "batch", "jobs"),
    // The CloudNativePG source's probe (deploy/components/cloudnativepg): read-only.
    call_for_source("cloudnativepg", "get", "postgresql.cnpg.io", "clusters"),
    call_for_source("cloudnativepg", "list", "postgresql.cnpg.io", "backups"),
    call_for_source(
        "cloudnativepg",
        "list",
        "postgresql.cnpg.io",
        "scheduledbackups",
    ),
    // Remediation actions.
    call_for("expand_pvc", "patch", "", "persistentvolumeclaims"),
    call_for("restart_primary", "patch", "apps", "statefulsets"),
];

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum KubeClientError {
    #[error("kubernetes.api_url {url:?} is not a URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("building the Kubernetes client failed: {0}")]
    Client(#[from] kube::Error),
    #[error("kubernetes.kubeconfig {path:?}: {reason}")]
    Kubeconfig { path: String, reason: String },
}

/// The client for `settings`: the `kubeconfig` file (and `context`) when set, else `api_url`,
/// else in-cluster or `$KUBECONFIG`. `Ok(None)` when there is no cluster configuration at all
/// (a laptop): Kubernetes probes are then skipped.
pub async fn connect(settings: &KubeSettings) -> Result<Option<kube::Client>, KubeClientError> {
    let options = kube::config::KubeConfigOptions {
        context: (!settings.context.is_empty()).then(|| settings.context.clone()),
        ..Default::default()
    };
    let mut config = if !settings.kubeconfig.is_empty() {
        let bad = |reason: String| KubeClientError::Kubeconfig {
            path: settings.kubeconfig.clone(),
            reason,
        };
        let file = kube::config::Kubeconfig::read_from(&settings.kubeconfig)
            .map_err(|e| bad(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| bad(e.to_string()))?
    } else if settings.api_url.is_empty() && options.context.is_some() {
        // A context names an entry of $KUBECONFIG (or ~/.kube/config); it must exist.
        kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| KubeClientError::Kubeconfig {
                path: "$KUBECONFIG".into(),
                reason: e.to_string(),
            })?
    } else if settings.api_url.is_empty() {
        match kube::Config::infer().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(reason = %e, "no Kubernetes configuration found");
                return Ok(None);
            }
        }
    } else {
        let url = settings
            .api_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| KubeClientError::BadUrl {
                url: settings.api_url.clone(),
                reason: e.to_string(),
            })?;
        kube::Config::new(url)
    };
    config.default_namespace = settings.namespace.clone();
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    Ok(Some(kube::Client::try_from(config)?))
}
