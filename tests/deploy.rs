//! deploy/ is what a platform team applies, so it is checked like code: every manifest parses
//! into its Kubernetes type without losing a field, the RBAC grants exactly the calls in
//! `KUBE_API_CALLS` (no more, no fewer), the generated ConfigMap holds a configuration the
//! service accepts, the pieces agree with each other (names, ports, namespace, user id), and the
//! monitoring files pass the real tools: promtool and amtool come with Debian's prometheus and
//! prometheus-alertmanager packages (scripts/test.sh installs them). In the modules below: the
//! Jobs the service creates pass Pod Security "restricted" (`job_security`, with the checker in
//! `pod_security`), the admission policy's CEL admits exactly those Jobs (`admission`), and
//! `kubectl kustomize` renders every combination of components into objects that validate
//! against the Kubernetes 1.30 schemas (`render`, with kubernetes-validate). The container image
//! cannot be built here (no registry access), so only the Dockerfile's agreement with the
//! manifests is checked.

#[path = "deploy/admission.rs"]
mod admission;
#[path = "deploy/fixtures.rs"]
mod fixtures;
#[path = "deploy/job_security.rs"]
mod job_security;
#[path = "deploy/pod_security.rs"]
mod pod_security;
#[path = "deploy/render.rs"]
mod render;

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use backup_remediator::config::Settings;
use backup_remediator::kube_client::{ApiCall, KUBE_API_CALLS};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Endpoints, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPort};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::{ClusterResourceScope, Resource};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Files in deploy/ that kustomization.yaml deliberately does not apply, and why.
const NOT_APPLIED: &[(&str, &str)] = &[
    (
        "alertmanager.yml",
        "Alertmanager configuration to merge, not a Kubernetes object",
    ),
    (
        "secret.example.yaml",
        "applying it would overwrite the real Secret with empty values",
    ),
];

/// Actions whose calls are granted by an opt-in kustomize component instead of the base Role.
const OPT_IN_COMPONENTS: &[(&str, &str)] = &[
    ("expand_pvc", "components/expand-pvc"),
    ("restart_primary", "components/restart-primary"),
];

/// Every kustomize component in deploy/ (the RBAC ones above, and the Prometheus Operator's
/// objects, on by default).
const COMPONENTS: &[&str] = &[
    "components/prometheus-operator",
    "components/expand-pvc",
    "components/restart-primary",
];

/// Where the Prometheus Operator's objects live.
const PROMETHEUS_RULE: &str = "deploy/components/prometheus-operator/prometheusrule.yaml";
const SERVICE_MONITOR: &str = "deploy/components/prometheus-operator/servicemonitor.yaml";

/// The service's own Secret and the configuration keys it carries (env var ← Secret key).
const SECRET_NAME: &str = "backup-remediator";
const SECRET_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "database-url"),
    ("BR_WEBHOOK_TOKEN", "webhook-token"),
    ("BR_API_TOKEN", "api-token"),
    ("BR_ADMIN_TOKEN", "admin-token"),
    ("BR_IAM__ACCESS_KEY_ID", "iam-access-key-id"),
    ("BR_IAM__SECRET_ACCESS_KEY", "iam-secret-access-key"),
    ("BR_REMEDIATION__ADMIN_DATABASE_URL", "admin-database-url"),
    ("BR_RESTORE_TEST__TARGET_URL", "restore-test-url"),
    ("BR_NOTIFY__SLACK_TOKEN", "slack-token"),
    ("BR_NOTIFY__SLACK_WEBHOOK_URL", "slack-webhook-url"),
    ("BR_NOTIFY__PAGERDUTY_ROUTING_KEY", "pagerduty-routing-key"),
];

/// Metrics the dashboard and rules use before the code emits them (remediation, escalation and
/// notification are being built); any other name must be emitted somewhere in src/.
const METRICS_TO_COME: &[&str] = &[];

/// Peak resident memory of the service under load (README, Performance), in MiB.
const MEASURED_PEAK_RSS_MIB: u64 = 34;

// ---- reading deploy/ ----

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The YAML documents of `rel` (relative to the crate root), as JSON values.
fn documents(rel: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every file below `dir`, relative to the crate root.
fn files_under(dir: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root().join(dir)];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(root()) {
                files.push(rel.display().to_string());
            }
        }
    }
    files
}

fn yaml(rel: &str) -> Value {
    let mut docs = documents(rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The files a kustomization (base or component) in `dir` applies, relative to the crate root.
fn kustomization_resources(dir: &str) -> Vec<String> {
    let k = yaml(&format!("{dir}/kustomization.yaml"));
    strings(&k["resources"])
        .iter()
        .map(|r| format!("{dir}/{r}"))
        .collect()
}

/// Every Kubernetes object deploy/ defines: the base, the opt-in components, the Secret example.
fn all_objects() -> Vec<(String, Value)> {
    let mut files = kustomization_resources("deploy");
    for component in COMPONENTS {
        files.extend(kustomization_resources(&format!("deploy/{component}")));
    }
    files.push("deploy/secret.example.yaml".into());
    files
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn is<K: Resource>(doc: &Value) -> bool {
    doc["apiVersion"] == K::API_VERSION && doc["kind"] == K::KIND
}

/// The one object of type `K` in `rel`, typed.
fn object<K: Resource + DeserializeOwned>(rel: &str) -> K {
    let mut found: Vec<Value> = documents(rel).into_iter().filter(is::<K>).collect();
    assert_eq!(found.len(), 1, "{rel}: expected exactly one {}", K::KIND);
    serde_json::from_value(found.remove(0))
        .unwrap_or_else(|e| panic!("{rel}: not a {}: {e}", K::KIND))
}

/// The configMapGenerator entry named `name` in deploy/kustomization.yaml.
fn generator(name: &str) -> Value {
    let k = yaml("deploy/kustomization.yaml");
    let found = k["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["name"] == name);
    found
        .unwrap_or_else(|| panic!("no configMapGenerator {name}"))
        .clone()
}

/// The ConfigMap holding the service's configuration.
const CONFIG_MAP: &str = "backup-remediator-config";

/// The settings the generated ConfigMap gives the service (deploy/config.toml).
fn configured() -> Settings {
    Settings::from_toml(&read("deploy/config.toml"))
        .unwrap_or_else(|e| panic!("deploy/config.toml: {e}"))
}

fn deployment() -> Deployment {
    object("deploy/deployment.yaml")
}

fn pod_spec(d: &Deployment) -> k8s_openapi::api::core::v1::PodSpec {
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    template.spec.expect("the Deployment has no pod spec")
}

fn container(d: &Deployment) -> Container {
    let spec = pod_spec(d);
    assert_eq!(spec.containers.len(), 1, "one container expected");
    spec.containers[0].clone()
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    template.metadata.and_then(|m| m.labels).unwrap_or_default()
}

fn match_labels(selector: Option<LabelSelector>) -> BTreeMap<String, String> {
    selector.and_then(|s| s.match_labels).unwrap_or_default()
}

/// The port numbers of NetworkPolicy rules (`ports` of each); named ports are refused.
fn numbers(rules: impl Iterator<Item = Option<Vec<NetworkPolicyPort>>>) -> Vec<i32> {
    let ports = rules.flatten().flatten().filter_map(|p| p.port);
    ports
        .map(|p| match p {
            IntOrString::Int(n) => n,
            IntOrString::String(s) => panic!("NetworkPolicy port {s:?}: use numbers"),
        })
        .collect()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).current_dir(root()).output().unwrap_or_else(|e| {
        panic!("{tool} could not run ({e}): run scripts/test.sh, or apt-get install prometheus prometheus-alertmanager")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `files` into a fresh directory and runs `promtool` with `args` there.
fn promtool_in_tempdir(files: &[(&str, String)], args: &[&str]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("writing a temporary file");
    }
    let paths: Vec<String> = args
        .iter()
        .map(|a| match files.iter().find(|(n, _)| n == a) {
            Some(_) => dir.path().join(a).display().to_string(),
            None => (*a).to_owned(),
        })
        .collect();
    run(
        "promtool",
        &paths.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

// ---- every object is what it says it is ----

/// Paths where `a` and `b` differ.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
                let (l, r) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                differences(l, r, &format!("{path}.{key}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                differences(l, r, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

/// Parses `doc` as `K` and back: k8s-openapi ignores fields it does not know, so a field lost on
/// the way is a typo or a field in the wrong place, which the API server would also drop.
fn round_trip<K: DeserializeOwned + Serialize>(file: &str, doc: &Value) {
    let typed: K = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {} does not parse: {e}", doc["kind"]));
    let back = serde_json::to_value(&typed).expect("serialising a parsed object");
    let mut diff = Vec::new();
    differences(doc, &back, "", &mut diff);
    assert!(
        diff.is_empty(),
        "{file}: {} fields the type does not have:\n{}",
        doc["kind"],
        diff.join("\n")
    );
}

type Check = fn(&str, &Value);

/// The built-in kinds deploy/ may use, each checked by its k8s-openapi type.
const TYPED: &[(&str, &str, Check)] = &[
    (
        Deployment::API_VERSION,
        Deployment::KIND,
        round_trip::<Deployment>,
    ),
    (Service::API_VERSION, Service::KIND, round_trip::<Service>),
    (
        ServiceAccount::API_VERSION,
        ServiceAccount::KIND,
        round_trip::<ServiceAccount>,
    ),
    (Role::API_VERSION, Role::KIND, round_trip::<Role>),
    (
        RoleBinding::API_VERSION,
        RoleBinding::KIND,
        round_trip::<RoleBinding>,
    ),
    (
        ClusterRole::API_VERSION,
        ClusterRole::KIND,
        round_trip::<ClusterRole>,
    ),
    (
        ClusterRoleBinding::API_VERSION,
        ClusterRoleBinding::KIND,
        round_trip::<ClusterRoleBinding>,
    ),
    (
        ConfigMap::API_VERSION,
        ConfigMap::KIND,
        round_trip::<ConfigMap>,
    ),
    (Secret::API_VERSION, Secret::KIND, round_trip::<Secret>),
    (
        NetworkPolicy::API_VERSION,
        NetworkPolicy::KIND,
        round_trip::<NetworkPolicy>,
    ),
    (
        PodDisruptionBudget::API_VERSION,
        PodDisruptionBudget::KIND,
        round_trip::<PodDisruptionBudget>,
    ),
    (
        Namespace::API_VERSION,
        Namespace::KIND,
        round_trip::<Namespace>,
    ),
    (
        ValidatingAdmissionPolicy::API_VERSION,
        ValidatingAdmissionPolicy::KIND,
        round_trip::<ValidatingAdmissionPolicy>,
    ),
    (
        ValidatingAdmissionPolicyBinding::API_VERSION,
        ValidatingAdmissionPolicyBinding::KIND,
        round_trip::<ValidatingAdmissionPolicyBinding>,
    ),
];

/// Prometheus Operator kinds (CRDs, no k8s-openapi type) and the `spec` fields each must have.
const CUSTOM: &[(&str, &str, &[&str])] = &[
    ("monitoring.coreos.com/v1", "PrometheusRule", &["groups"]),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        &["selector", "endpoints"],
    ),
];

#[test]
fn every_manifest_parses_into_its_kubernetes_type_without_losing_a_field() {
    for (file, doc) in all_objects() {
        let (api_version, kind) = (doc["apiVersion"].as_str(), doc["kind"].as_str());
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        assert!(!name.is_empty(), "{file}: a {kind:?} without metadata.name");
        if let Some((_, _, check)) = TYPED
            .iter()
            .find(|(v, k, _)| Some(*v) == api_version && Some(*k) == kind)
        {
            check(&file, &doc);
        } else if let Some((_, _, required)) = CUSTOM
            .iter()
            .find(|(v, k, _)| Some(*v) == api_version && Some(*k) == kind)
        {
            for field in *required {
                assert!(
                    !doc["spec"][field].is_null(),
                    "{file}: {kind:?} {name} lacks spec.{field}"
                );
            }
        } else {
            panic!(
                "{file}: no check for {api_version:?} {kind:?}: add its type to TYPED or CUSTOM"
            );
        }
    }
}

#[test]
fn the_kustomization_applies_every_file_in_deploy_except_the_examples() {
    let base = yaml("deploy/kustomization.yaml");
    assert_eq!(base["kind"], "Kustomization");
    let mut listed: BTreeSet<String> = kustomization_resources("deploy").into_iter().collect();
    listed.insert("deploy/kustomization.yaml".into());
    for generator in base["configMapGenerator"].as_array().into_iter().flatten() {
        listed.extend(
            strings(&generator["files"])
                .iter()
                .map(|f| format!("deploy/{f}")),
        );
    }
    let base_text = read("deploy/kustomization.yaml");
    for component in COMPONENTS {
        let dir = format!("deploy/{component}");
        assert_eq!(
            yaml(&format!("{dir}/kustomization.yaml"))["kind"],
            "Component",
            "{dir}"
        );
        listed.insert(format!("{dir}/kustomization.yaml"));
        listed.extend(kustomization_resources(&dir));
        assert!(
            base_text.contains(component),
            "deploy/kustomization.yaml does not mention {component}"
        );
    }
    for (action, component) in OPT_IN_COMPONENTS {
        assert!(COMPONENTS.contains(component), "{action}: {component}");
    }
    for (file, why) in NOT_APPLIED {
        assert!(
            !listed.contains(&format!("deploy/{file}")),
            "deploy/{file} is applied, yet {why}"
        );
        listed.insert(format!("deploy/{file}"));
    }

    let on_disk: BTreeSet<String> = files_under("deploy").into_iter().collect();
    let forgotten: Vec<_> = on_disk.difference(&listed).collect();
    assert!(
        forgotten.is_empty(),
        "in deploy/ but in no kustomization: {forgotten:?}"
    );
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    assert!(missing.is_empty(), "listed but not in deploy/: {missing:?}");
}

// ---- configuration ----

#[test]
fn the_configmap_holds_a_configuration_the_service_accepts_and_no_secret() {
    let s = configured();
    assert_eq!(
        s.log.format,
        backup_remediator::config::LogFormat::Json,
        "a cluster wants JSON logs"
    );
    let secrets = [
        ("auth.webhook_token", s.auth.webhook_token.expose_secret()),
        ("auth.api_token", s.auth.api_token.expose_secret()),
        ("auth.admin_token", s.auth.admin_token.expose_secret()),
        (
            "auth.webhook_basic_password",
            s.auth.webhook_basic_password.expose_secret(),
        ),
        ("database.url", s.database.url.expose_secret()),
        (
            "iam.secret_access_key",
            s.iam.secret_access_key.expose_secret(),
        ),
    ];
    for (key, value) in secrets {
        assert!(
            value.is_empty(),
            "deploy/config.toml sets {key}: secrets belong in the Secret"
        );
    }
    assert!(
        !s.auth.insecure_no_auth,
        "deploy/config.toml turns authentication off"
    );
}

#[test]
fn every_object_lives_in_the_namespace_the_service_is_configured_for() {
    let namespace = configured().kubernetes.namespace;
    for (file, doc) in all_objects() {
        let cluster_scoped = is::<ClusterRole>(&doc)
            || is::<ClusterRoleBinding>(&doc)
            || is::<ValidatingAdmissionPolicy>(&doc)
            || is::<ValidatingAdmissionPolicyBinding>(&doc);
        let ns = doc["metadata"]["namespace"].as_str();
        if cluster_scoped {
            assert_eq!(ns, None, "{file}: {} is cluster-scoped", doc["kind"]);
        } else {
            assert_eq!(
                ns,
                Some(namespace.as_str()),
                "{file}: {} {}",
                doc["kind"],
                doc["metadata"]["name"]
            );
        }
        for subject in doc["subjects"].as_array().into_iter().flatten() {
            assert_eq!(
                subject["namespace"],
                namespace.as_str(),
                "{file}: subject {subject}"
            );
        }
    }
    for generator in yaml("deploy/kustomization.yaml")["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(
            generator["namespace"],
            namespace.as_str(),
            "configMapGenerator {}",
            generator["name"]
        );
    }
    let monitor = yaml(SERVICE_MONITOR);
    assert_eq!(
        strings(&monitor["spec"]["namespaceSelector"]["matchNames"]),
        [namespace]
    );
}

// ---- the Deployment ----

#[test]
fn the_deployment_runs_unprivileged_on_a_read_only_root_filesystem() {
    let d = deployment();
    let pod = pod_spec(&d)
        .security_context
        .expect("no pod securityContext");
    let c = container(&d)
        .security_context
        .expect("no container securityContext");
    // The container's settings win over the pod's; each must hold where it takes effect.
    assert_eq!(
        c.run_as_non_root.or(pod.run_as_non_root),
        Some(true),
        "runAsNonRoot"
    );
    let uid = c
        .run_as_user
        .or(pod.run_as_user)
        .expect("runAsUser: the kubelet verifies non-root by id");
    assert_ne!(uid, 0, "runAsUser 0");
    assert_eq!(
        c.allow_privilege_escalation,
        Some(false),
        "allowPrivilegeEscalation"
    );
    assert_eq!(
        c.read_only_root_filesystem,
        Some(true),
        "readOnlyRootFilesystem"
    );
    assert_eq!(c.privileged, None, "privileged");
    let caps = c.capabilities.expect("capabilities");
    assert_eq!(
        caps.drop,
        Some(vec!["ALL".to_string()]),
        "capabilities.drop"
    );
    assert_eq!(caps.add, None, "capabilities.add");
    let seccomp = c
        .seccomp_profile
        .or(pod.seccomp_profile)
        .expect("seccompProfile");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let spec = pod_spec(&d);
    assert_ne!(spec.host_network, Some(true));
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("backup-remediator")
    );
}

#[test]
fn the_deployment_runs_two_replicas_on_postgresql_sized_from_the_measured_footprint() {
    let d = deployment();
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let c = container(&d);
    let env = c.env.clone().unwrap_or_default();
    let from_secret = |name: &str| {
        let var = env.iter().find(|e| e.name == name);
        var.and_then(|e| e.value_from.clone())
            .and_then(|v| v.secret_key_ref)
    };
    for (var, key) in SECRET_ENV {
        let r = from_secret(var).unwrap_or_else(|| panic!("{var} does not come from a Secret"));
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            (SECRET_NAME, *key),
            "{var}"
        );
    }
    let db = from_secret("DATABASE_URL").expect("DATABASE_URL");
    assert_ne!(
        db.optional,
        Some(true),
        "without DATABASE_URL the replicas would each use SQLite"
    );
    assert!(
        env.iter()
            .all(|e| e.value.is_none() || !e.name.contains("TOKEN")),
        "a token inline"
    );

    // Every key the Deployment reads is in the Secret example, and the example has no other.
    let example: Secret = object("deploy/secret.example.yaml");
    let keys: BTreeSet<_> = example
        .string_data
        .unwrap_or_default()
        .into_keys()
        .collect();
    let wanted: BTreeSet<_> = SECRET_ENV.iter().map(|(_, k)| k.to_string()).collect();
    assert_eq!(keys, wanted, "deploy/secret.example.yaml");
    assert_eq!(example.data, None, "the example holds no values");

    let resources = c.resources.expect("resources");
    let q =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    let mib = |s: Option<String>| -> u64 {
        let s = s.expect("a memory quantity");
        s.strip_suffix("Mi")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{s}: write memory in Mi"))
    };
    let request = mib(q(&resources.requests, "memory"));
    let limit = mib(q(&resources.limits, "memory"));
    assert!(
        request >= MEASURED_PEAK_RSS_MIB,
        "memory request {request}Mi under the measured peak"
    );
    assert!(
        limit >= 2 * MEASURED_PEAK_RSS_MIB,
        "memory limit {limit}Mi leaves no headroom"
    );
    assert!(q(&resources.requests, "cpu").is_some(), "no CPU request");
}

#[test]
fn the_deployment_service_probes_and_config_agree() {
    let d = deployment();
    let settings = configured();
    let c = container(&d);
    let labels = pod_labels(&d);

    // The container port is the one the service listens on, and the probes use it.
    let ports = c.ports.clone().unwrap_or_default();
    let http = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .expect("a port named http");
    assert_eq!(
        http.container_port,
        i32::from(settings.server.listen.port())
    );
    let probe_path = |p: Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.and_then(|p| p.http_get).expect("an httpGet probe");
        assert_eq!(get.port, IntOrString::String("http".into()));
        get.path.unwrap_or_default()
    };
    assert_eq!(probe_path(c.liveness_probe.clone()), "/healthz");
    assert_eq!(probe_path(c.readiness_probe.clone()), "/readyz");

    // The config file the service is told to read is the ConfigMap's key, mounted there.
    let args = c.args.clone().unwrap_or_default();
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("serve --config FILE");
    let file = Path::new(&args[at + 1]);
    let mount = c
        .volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find(|m| Some(Path::new(&m.mount_path)) == file.parent())
        .expect("the config file's directory is not mounted");
    let volume = pod_spec(&d)
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == mount.name)
        .expect("the mounted volume");
    assert_eq!(
        volume.config_map.map(|c| c.name).as_deref(),
        Some(CONFIG_MAP)
    );
    let key = file
        .file_name()
        .and_then(|f| f.to_str())
        .expect("a file name");
    let config = generator(CONFIG_MAP);
    assert_eq!(strings(&config["files"]), [key], "the ConfigMap's one key");
    assert_ne!(
        config["options"]["disableNameSuffixHash"], true,
        "without the hash suffix a config edit does not roll the pods"
    );
    let grace = pod_spec(&d).termination_grace_period_seconds.unwrap_or(30);
    assert!(
        grace > settings.server.shutdown_grace_seconds as i64,
        "in-flight requests get killed"
    );

    // Service, PodDisruptionBudget and NetworkPolicy select the Deployment's pods.
    let svc: Service = object("deploy/service.yaml");
    let spec = svc.spec.expect("Service spec");
    assert!(
        selects(&spec.selector.unwrap_or_default(), &labels),
        "the Service selects no pod"
    );
    let sp = spec.ports.unwrap_or_default();
    assert!(sp.iter().any(|p| p.name.as_deref() == Some("http")
        && p.target_port == Some(IntOrString::String("http".into()))));
    let pdb: PodDisruptionBudget = object("deploy/poddisruptionbudget.yaml");
    let pdb = pdb.spec.expect("PDB spec");
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    assert!(selects(&match_labels(pdb.selector), &labels));
    let np: NetworkPolicy = object("deploy/networkpolicy.yaml");
    let np = np.spec.expect("NetworkPolicy spec");
    assert!(selects(&match_labels(np.pod_selector), &labels));
    let types = np.policy_types.unwrap_or_default();
    assert!(
        types.contains(&"Ingress".into()) && types.contains(&"Egress".into()),
        "{types:?}"
    );
    let ingress_ports = numbers(np.ingress.unwrap_or_default().into_iter().map(|r| r.ports));
    assert_eq!(ingress_ports, [http.container_port], "ingress");
    let egress_ports = numbers(np.egress.unwrap_or_default().into_iter().map(|r| r.ports));
    let prometheus_port = settings
        .prometheus
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok());
    for (what, port) in [
        ("DNS", Some(53)),
        ("PostgreSQL", Some(i32::from(settings.target.port))),
        ("HTTPS", Some(443)),
        ("Prometheus", prometheus_port),
    ] {
        let port = port.unwrap_or_else(|| panic!("no port for {what}"));
        assert!(egress_ports.contains(&port), "no egress to {what} ({port})");
    }
}

// ---- RBAC: exactly KUBE_API_CALLS ----

/// A resource the service may name in an API call: group, plural, and scope, from k8s-openapi.
struct Known {
    group: &'static str,
    plural: &'static str,
    cluster_scoped: bool,
}

fn known<K: Resource>() -> Known
where
    K::Scope: 'static,
{
    Known {
        group: K::GROUP,
        plural: K::URL_PATH_SEGMENT,
        cluster_scoped: TypeId::of::<K::Scope>() == TypeId::of::<ClusterResourceScope>(),
    }
}

fn known_resources() -> Vec<Known> {
    vec![
        known::<Secret>(),
        known::<Pod>(),
        known::<Endpoints>(),
        known::<PersistentVolumeClaim>(),
        known::<StatefulSet>(),
        known::<Job>(),
        known::<CronJob>(),
        known::<StorageClass>(),
        known::<Service>(),
        known::<ConfigMap>(),
    ]
}

/// Whether `call` is to a cluster-scoped resource; panics on a resource Kubernetes does not have.
fn cluster_scoped(call: &ApiCall) -> bool {
    let (base, sub) = call.resource.split_once('/').unwrap_or((call.resource, ""));
    assert!(
        ["", "log", "status", "scale"].contains(&sub),
        "{call:?}: unknown subresource"
    );
    let k = known_resources()
        .into_iter()
        .find(|k| k.group == call.group && k.plural == base);
    let k = k.unwrap_or_else(|| {
        panic!("{call:?}: not a known resource; add its type to known_resources()")
    });
    k.cluster_scoped
}

type Grant = (String, String, String);

fn grant(call: &ApiCall) -> Grant {
    (call.verb.into(), call.group.into(), call.resource.into())
}

/// What `rules` allow, one (verb, group, resource) each; wildcards are refused outright.
fn grants(file: &str, rules: &[PolicyRule]) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.non_resource_urls.is_none(), "{file}: nonResourceURLs");
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        for s in groups.iter().chain(&resources).chain(&rule.verbs) {
            assert!(!s.contains('*'), "{file}: wildcard {s:?} in {rule:?}");
        }
        for g in &groups {
            for r in &resources {
                for v in &rule.verbs {
                    assert!(
                        out.insert((v.clone(), g.clone(), r.clone())),
                        "{file}: {v} {g}/{r} granted twice"
                    );
                }
            }
        }
    }
    out
}

/// The opt-in component an action's calls are granted by, if any.
fn component_of(call: &ApiCall) -> Option<&'static str> {
    let action = call.only_for_action?;
    OPT_IN_COMPONENTS
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, c)| *c)
}

/// Objects the service reads by a configured name: their rules must name exactly that object.
fn named_objects(s: &Settings) -> BTreeMap<&'static str, String> {
    let k = &s.kubernetes;
    BTreeMap::from([
        ("secrets", k.backup_secret.clone()),
        ("endpoints", k.primary_service.clone()),
        ("persistentvolumeclaims", k.primary_pvc.clone()),
        ("statefulsets", k.primary_statefulset.clone()),
        ("cronjobs", k.backup_cronjob.clone()),
    ])
}

fn assert_names_restricted(file: &str, rules: &[PolicyRule]) {
    let names = named_objects(&configured());
    for rule in rules {
        for resource in rule.resources.iter().flatten() {
            let expected = names.get(resource.as_str()).map(|n| vec![n.clone()]);
            assert_eq!(
                rule.resource_names, expected,
                "{file}: resourceNames of the {resource} rule"
            );
        }
    }
}

/// The Role in `rel` and its binding to the service's ServiceAccount.
fn bound_role(rel: &str) -> Role {
    let role: Role = object(rel);
    let binding: RoleBinding = object(rel);
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(
        Some(binding.role_ref.name),
        role.metadata.name,
        "{rel}: the binding's roleRef"
    );
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{rel}: one subject");
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", "backup-remediator")
    );
    role
}

#[test]
fn every_kubernetes_api_call_names_a_real_resource() {
    for call in KUBE_API_CALLS {
        cluster_scoped(call);
        let verbs = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        assert!(verbs.contains(&call.verb), "{call:?}: unknown verb");
    }
}

#[test]
fn the_role_grants_exactly_the_namespaced_calls_the_code_makes() {
    let role = bound_role("deploy/role.yaml");
    let rules = role.rules.unwrap_or_default();
    let granted = grants("deploy/role.yaml", &rules);
    let needed: BTreeSet<Grant> = KUBE_API_CALLS
        .iter()
        .filter(|c| !cluster_scoped(c) && component_of(c).is_none())
        .map(grant)
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "calls the code makes that deploy/role.yaml does not grant: {missing:?}"
    );
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        extra.is_empty(),
        "deploy/role.yaml grants calls the code does not make: {extra:?}"
    );
    assert_names_restricted("deploy/role.yaml", &rules);
}

#[test]
fn each_opt_in_component_grants_exactly_its_actions_calls() {
    for (action, component) in OPT_IN_COMPONENTS {
        let files = kustomization_resources(&format!("deploy/{component}"));
        assert_eq!(
            files.len(),
            1,
            "{component}: one file with a Role and its binding"
        );
        let role = bound_role(&files[0]);
        let rules = role.rules.unwrap_or_default();
        let granted = grants(&files[0], &rules);
        let needed: BTreeSet<Grant> = KUBE_API_CALLS
            .iter()
            .filter(|c| c.only_for_action == Some(action))
            .map(grant)
            .collect();
        assert!(
            !needed.is_empty(),
            "{action}: no call needs {component}; remove it"
        );
        assert_eq!(granted, needed, "{}", files[0]);
        assert_names_restricted(&files[0], &rules);
    }
}

#[test]
fn the_cluster_role_only_reads_storage_classes() {
    let rel = "deploy/clusterrole.yaml";
    let role: ClusterRole = object(rel);
    let binding: ClusterRoleBinding = object(rel);
    assert_eq!(
        (binding.role_ref.kind.as_str(), Some(binding.role_ref.name)),
        ("ClusterRole", role.metadata.name)
    );
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{rel}: one subject");
    assert_eq!(subjects[0].name, "backup-remediator");
    assert!(role.aggregation_rule.is_none(), "{rel}: aggregation");
    let granted = grants(rel, &role.rules.unwrap_or_default());
    let needed: BTreeSet<Grant> = KUBE_API_CALLS
        .iter()
        .filter(|c| cluster_scoped(c))
        .map(grant)
        .collect();
    assert_eq!(granted, needed, "{rel}");
    assert_eq!(
        granted,
        BTreeSet::from([(
            "get".into(),
            "storage.k8s.io".into(),
            "storageclasses".into()
        )])
    );
}

// ---- monitoring ----

/// The PrometheusRule's `spec`: a Prometheus rule file.
fn rule_file() -> String {
    let rule = yaml(PROMETHEUS_RULE);
    serde_yaml::to_string(&rule["spec"]).expect("writing the rule file")
}

/// `field` (alert, expr…) of every rule in the PrometheusRule that has it.
fn rule_fields(field: &str) -> Vec<String> {
    let rule = yaml(PROMETHEUS_RULE);
    let groups = rule["spec"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r[field].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool() {
    promtool_in_tempdir(
        &[("rules.yml", rule_file())],
        &["check", "rules", "rules.yml"],
    );
}

#[test]
fn the_alert_rules_fire_when_they_should() {
    promtool_in_tempdir(
        &[
            ("rules.yml", rule_file()),
            ("rules.test.yml", read("tests/deploy/alert-rules.test.yml")),
        ],
        &["test", "rules", "rules.test.yml"],
    );
}

#[test]
fn the_alert_rules_include_the_runbook_and_service_alerts() {
    let alerts: BTreeSet<String> = rule_fields("alert").into_iter().collect();
    for name in [
        "PostgreSQLBackupFailed",
        "PostgreSQLDataVolumeAlmostFull",
        "BackupRemediatorDown",
        "BackupRemediatorWebhookErrors",
        "BackupRemediatorEscalated",
        "BackupRemediatorNotificationsFailing",
    ] {
        assert!(alerts.contains(name), "no {name} alert");
    }
    // The alert the service handles is the one it is configured to handle.
    for handled in configured().alerts.handled {
        assert!(
            alerts.contains(&handled),
            "the service handles {handled}, which no rule raises"
        );
    }
}

#[test]
fn the_service_monitor_scrapes_the_services_metrics_port() {
    let monitor = yaml(SERVICE_MONITOR);
    let svc: Service = object("deploy/service.yaml");
    let labels = svc.metadata.labels.unwrap_or_default();
    let selector: BTreeMap<String, String> =
        serde_json::from_value(monitor["spec"]["selector"]["matchLabels"].clone())
            .expect("matchLabels");
    assert!(
        selects(&selector, &labels),
        "the ServiceMonitor selects no Service"
    );
    let port_names: Vec<_> = svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    for endpoint in monitor["spec"]["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert!(
            port_names.iter().any(|p| endpoint["port"] == p.as_str()),
            "port {}",
            endpoint["port"]
        );
        assert_eq!(endpoint["path"], "/metrics");
    }
    // BackupRemediatorDown and the dashboard find the scrape by job = the Service's name.
    assert_eq!(svc.metadata.name.as_deref(), Some("backup-remediator"));
}

#[test]
fn the_alertmanager_receiver_passes_amtool() {
    run("amtool", &["check-config", "deploy/alertmanager.yml"]);
}

#[test]
fn the_alertmanager_receiver_posts_to_the_service_with_a_token_and_resolutions() {
    let am = yaml("deploy/alertmanager.yml");
    let receiver = am["receivers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "backup-remediator")
        .expect("a backup-remediator receiver")
        .clone();
    let hook = &receiver["webhook_configs"][0];
    assert_eq!(hook["send_resolved"], true);
    assert_eq!(hook["http_config"]["authorization"]["type"], "Bearer");
    let svc: Service = object("deploy/service.yaml");
    let port = svc.spec.and_then(|s| s.ports).unwrap_or_default()[0].port;
    let url = format!(
        "http://{}.{}.svc:{port}/webhook/alertmanager",
        svc.metadata.name.unwrap_or_default(),
        svc.metadata.namespace.unwrap_or_default()
    );
    assert_eq!(hook["url"], url.as_str());
}

/// Every `backup_remediator_*` metric name the code emits (read from src/).
fn emitted_metrics() -> BTreeSet<String> {
    let name = regex::Regex::new(r#""(backup_remediator_[a-z_]+)""#).expect("a regex");
    let mut found = BTreeSet::new();
    for file in files_under("src").iter().filter(|f| f.ends_with(".rs")) {
        found.extend(name.captures_iter(&read(file)).map(|c| c[1].to_owned()));
    }
    found
}

/// Fails on a `backup_remediator_*` name in `exprs` that nothing emits (or will soon).
fn assert_metrics_exist(what: &str, exprs: &[String]) {
    let emitted = emitted_metrics();
    let used = regex::Regex::new(r"backup_remediator_[a-z_]+").expect("a regex");
    for expr in exprs {
        for m in used.find_iter(expr) {
            let name = m.as_str();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| emitted.contains(*b)))
                .unwrap_or(name);
            assert!(
                emitted.contains(base) || METRICS_TO_COME.contains(&base),
                "{what}: {name} is not a metric the service emits"
            );
        }
    }
}

#[test]
fn the_alert_rules_use_only_metrics_the_service_emits() {
    assert_metrics_exist(PROMETHEUS_RULE, &rule_fields("expr"));
}

#[test]
fn every_dashboard_query_is_valid_promql_over_the_services_metrics() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/backup-remediator.json"))
        .expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "backup-remediator");
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<_> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("panel id"))
        .collect();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| {
            t["expr"]
                .as_str()
                .expect("a target without expr")
                .to_owned()
        })
        .collect();
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());
    assert_metrics_exist("the dashboard", &exprs);

    // Grafana's variables become values, then each query is a recording rule promtool parses.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let concrete = expr
            .replace("$__rate_interval", "5m")
            .replace("$namespace", "link-services");
        assert!(!concrete.contains('$'), "an unknown variable in {expr}");
        rules += &format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&concrete).expect("quoting")
        );
    }
    promtool_in_tempdir(
        &[("dashboard.yml", rules)],
        &["check", "rules", "dashboard.yml"],
    );
}

// ---- the image ----

#[test]
fn the_image_runs_as_the_user_the_deployment_expects() {
    let dockerfile = read("Dockerfile");
    let last_stage = dockerfile.rsplit("\nFROM ").next().expect("a FROM");
    assert!(
        !last_stage.starts_with("rust"),
        "the runtime image is the toolchain image"
    );
    let user = last_stage
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER in the final stage");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let pod = pod_spec(&deployment())
        .security_context
        .expect("pod securityContext");
    assert_eq!(
        uid.parse::<i64>().ok(),
        pod.run_as_user,
        "Dockerfile USER vs runAsUser"
    );
    assert_eq!(
        gid.parse::<i64>().ok(),
        pod.run_as_group,
        "Dockerfile USER vs runAsGroup"
    );

    // The toolchain is new enough for the crate's rust-version.
    let version = |s: &str| -> Vec<u32> { s.split('.').filter_map(|n| n.parse().ok()).collect() };
    let toolchain = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|l| l.split('-').next())
        .expect("FROM rust:VERSION-…");
    assert!(
        version(toolchain) >= version(env!("CARGO_PKG_RUST_VERSION")),
        "Rust {toolchain} is too old"
    );

    // What the build copies exists and is in the allow-listed build context.
    let allowed = read(".dockerignore");
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<_> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(
                root().join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            let src = src.trim_end_matches('/');
            assert!(
                allowed
                    .lines()
                    .any(|l| l.trim_end_matches('/') == format!("!{src}")),
                ".dockerignore leaves out {src}"
            );
        }
    }

    // The tag kustomize deploys is this version.
    let images = yaml("deploy/kustomization.yaml")["images"].clone();
    assert_eq!(
        images[0]["name"],
        container(&deployment()).image.unwrap_or_default().as_str()
    );
    assert_eq!(images[0]["newTag"], env!("CARGO_PKG_VERSION"));
}
