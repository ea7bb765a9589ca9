//! `kubectl kustomize deploy/` with every combination of the components renders, and each
//! rendering validates strictly against the Kubernetes 1.30 schemas (kubernetes-validate from
//! PyPI; scripts/test.sh installs it and sets KUBERNETES_VALIDATE). The Prometheus Operator's
//! kinds are CRDs without a schema there: they are checked by the other tests instead.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::Value;

use super::targets::target_namespaces;
use super::{root, yaml, COMPONENTS, CONFIG_MAP, TARGETS_COMPONENT};

/// Kinds whose schema kubernetes-validate does not have (CRDs).
const CUSTOM_KINDS: &[&str] = &["PrometheusRule", "ServiceMonitor"];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating a directory");
    for entry in std::fs::read_dir(from).expect("reading deploy/").flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copying a file");
        }
    }
}

/// deploy/ rendered with exactly `components` enabled, as YAML text.
pub(super) fn render(components: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    copy_dir(&root().join("deploy"), dir.path());
    let mut k = yaml("deploy/kustomization.yaml");
    k["components"] = Value::from(components.to_vec());
    let text = serde_yaml::to_string(&k).expect("writing YAML");
    std::fs::write(dir.path().join("kustomization.yaml"), text).expect("writing");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("kubectl could not run ({e}): run scripts/test.sh, which builds kubectl where there is none"));
    assert!(
        out.status.success(),
        "kubectl kustomize with {components:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// deploy/ rendered with exactly `components` enabled, one value per object.
pub(super) fn rendered(components: &[&str]) -> Vec<Value> {
    documents(&render(components))
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Runs kubernetes-validate on `text`: every object must pass the 1.30 schema strictly.
fn validate(what: &str, text: &str, objects: usize) {
    let tool = std::env::var("KUBERNETES_VALIDATE").unwrap_or("kubernetes-validate".into());
    let mut child = Command::new(&tool)
        .args(["--strict", "-k", "1.30.0", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{tool} could not run ({e}): run scripts/test.sh, or pip install kubernetes-validate and set KUBERNETES_VALIDATE")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to kubernetes-validate");
    let out = child.wait_with_output().expect("kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what}: {report}");
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for resource "))
        .count();
    let unknown: Vec<_> = report
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
        .collect();
    assert!(
        unknown.iter().all(|l| CUSTOM_KINDS
            .iter()
            .any(|k| l.contains(&format!("kind {k} ")))),
        "{what}: a kind without a schema: {unknown:?}"
    );
    assert_eq!(
        passed + unknown.len(),
        objects,
        "{what}: not every object was validated:\n{report}"
    );
}

/// Every subset of the components.
fn combinations() -> Vec<Vec<&'static str>> {
    (0..1u32 << COMPONENTS.len())
        .map(|mask| {
            COMPONENTS
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, c)| *c)
                .collect()
        })
        .collect()
}

#[test]
fn every_combination_of_components_renders_and_validates_against_kubernetes_1_30() {
    let base_only = documents(&render(&[]));
    let kinds_of = |docs: &[Value]| -> BTreeSet<String> {
        docs.iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or_default(),
                    d["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect()
    };
    let base = kinds_of(&base_only);
    for components in combinations() {
        let text = render(&components);
        let docs = documents(&text);

        validate(&format!("{components:?}"), &text, docs.len());
        // A component adds its objects and takes nothing away.
        let names = kinds_of(&docs);
        assert!(names.is_superset(&base), "{components:?} lost objects");
        assert_eq!(
            names.iter().any(|n| n.starts_with("PrometheusRule/")),
            components.contains(&"components/prometheus-operator"),
            "{components:?}"
        );
        for (component, role) in [
            ("components/expand-pvc", "Role/backup-remediator-expand-pvc"),
            (
                "components/restart-primary",
                "Role/backup-remediator-restart-primary",
            ),
            (
                "components/cloudnativepg",
                "Role/backup-remediator-cloudnativepg",
            ),
        ] {
            assert_eq!(
                names.contains(role),
                components.contains(&component),
                "{components:?}"
            );
        }
        // The service's Role: its own namespace's, and one in each target namespace.
        let roles = docs
            .iter()
            .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == "backup-remediator")
            .count();
        let targets = match components.contains(&TARGETS_COMPONENT) {
            true => target_namespaces().len(),
            false => 0,
        };
        assert_eq!(roles, 1 + targets, "{components:?}");
    }
}

#[test]
fn the_rendered_deployment_mounts_the_hashed_config_map_so_config_edits_roll_the_pods() {
    let docs = documents(&render(&[]));
    let config_maps: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with(&format!("{CONFIG_MAP}-")))
        .collect();
    assert_eq!(config_maps.len(), 1, "{config_maps:?}");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();

    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == config_maps[0].as_str()),
        "the Deployment does not mount {}",
        config_maps[0]
    );
    let rendered = docs
        .iter()
        .find(|d| d["metadata"]["name"] == config_maps[0].as_str())
        .expect("the ConfigMap");
    assert_eq!(
        rendered["data"]["config.toml"].as_str(),
        Some(super::read("deploy/config.toml").as_str())
    );
}
