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

mod admission;
mod deployment;
mod fixtures;
mod image;
mod job_security;
mod monitoring;
mod pod_security;
mod rbac;
mod render;
mod targets;

use std::any::TypeId;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use backup_remediator::config::Settings;
use backup_remediator::infra::kube::{ApiCall, KUBE_API_CALLS};
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

/// Backup sources whose probe's calls are granted by an opt-in kustomize component.
const SOURCE_COMPONENTS: &[(&str, &str)] = &[("cloudnativepg", "components/cloudnativepg")];

/// Every kustomize component in deploy/ (the RBAC ones above, the grants in other targets'
/// namespaces, and the Prometheus Operator's objects, on by default).
const COMPONENTS: &[&str] = &[
    "components/prometheus-operator",
    "components/expand-pvc",
    "components/restart-primary",
    "components/cloudnativepg",
    TARGETS_COMPONENT,
];

/// The component that gives the service its Role in the namespace of each target outside its
/// own (one folder per namespace under `namespaces/`), off by default.
const TARGETS_COMPONENT: &str = "components/targets";

/// Where the Prometheus Operator's objects live.
const PROMETHEUS_RULE: &str = "deploy/components/prometheus-operator/prometheusrule.yaml";
const SERVICE_MONITOR: &str = "deploy/components/prometheus-operator/servicemonitor.yaml";

/// The service's own Secret and the configuration keys it carries (env var ← Secret key).
const SECRET_NAME: &str = "backup-remediator";
const SECRET_ENV: &[(&str, &str)] = &[
    ("DATABASE_URL", "database-url"),
    ("BR_IAM__ACCESS_KEY_ID", "iam-access-key-id"),
    ("BR_IAM__SECRET_ACCESS_KEY", "iam-secret-access-key"),
    ("BR_REMEDIATION__ADMIN_DATABASE_URL", "admin-database-url"),
    ("BR_RESTORE_TEST__TARGET_URL", "restore-test-url"),
    ("BR_NOTIFY__SLACK_TOKEN", "slack-token"),
    ("BR_NOTIFY__SLACK_WEBHOOK_URL", "slack-webhook-url"),
    ("BR_NOTIFY__SLACK_SIGNING_SECRET", "slack-signing-secret"),
    ("BR_NOTIFY__PAGERDUTY_ROUTING_KEY", "pagerduty-routing-key"),
];

/// The Secret's keys the service reads as files (re-read while it runs, for rotation): Secret
/// key ← the config key naming its file.
const SECRET_FILES: &[(&str, &str)] = &[
    ("webhook-tokens", "auth.webhook_token_file"),
    ("readers", "auth.readers_file"),
    ("admins", "auth.admins_file"),
];

/// Metrics the dashboard and rules use before the code emits them (remediation, escalation and
/// notification are being built); any other name must be emitted somewhere in src/.
const METRICS_TO_COME: &[&str] = &[];

/// Peak resident memory of the service under load (docs/src/performance.md), in MiB.
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

/// `path` with its `..` and `.` steps resolved (kustomize paths are relative to their folder).
fn normalized(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// The kustomization.yaml files of the kustomization (base or component) in `dir` and of every
/// folder it takes resources from, relative to the crate root.
fn kustomizations(dir: &str) -> Vec<String> {
    let mut found = vec![format!("{dir}/kustomization.yaml")];
    let k = yaml(&found[0]);
    for r in strings(&k["resources"]) {
        let path = normalized(&format!("{dir}/{r}"));
        if root().join(&path).is_dir() {
            found.extend(kustomizations(&path));
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The files a kustomization (base or component) in `dir` applies, relative to the crate root,
/// those of the folders it takes resources from included (each file once).
fn kustomization_resources(dir: &str) -> Vec<String> {
    let mut files = Vec::new();
    for kustomization in kustomizations(dir) {
        let folder = kustomization.trim_end_matches("/kustomization.yaml");
        for r in strings(&yaml(&kustomization)["resources"]) {
            let path = normalized(&format!("{folder}/{r}"));
            if !root().join(&path).is_dir() && !files.contains(&path) {
                files.push(path);
            }
        }
    }
    files
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
        listed.extend(kustomizations(&dir));
        listed.extend(kustomization_resources(&dir));
        assert!(
            base_text.contains(component),
            "deploy/kustomization.yaml does not mention {component}"
        );
    }
    for (action, component) in OPT_IN_COMPONENTS.iter().chain(SOURCE_COMPONENTS) {
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
        s.auth.webhook_tokens.is_empty()
            && s.auth.webhook_basic.is_empty()
            && s.auth.admins.is_empty()
            && s.auth.readers.is_empty(),
        "deploy/config.toml lists credentials: they belong in the Secret's files"
    );
    assert!(
        !s.auth.insecure_no_auth && !s.auth.insecure_no_auth_on_network,
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
        // The targets component's Role is moved into each target namespace by its folder
        // (checked rendered, in `targets`); its binding's subject is still ours, below.
        let in_target_namespace = file.starts_with(&format!("deploy/{TARGETS_COMPONENT}/"));
        if cluster_scoped {
            assert_eq!(ns, None, "{file}: {} is cluster-scoped", doc["kind"]);
        } else if !in_target_namespace {
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
