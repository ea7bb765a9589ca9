//! deploy/components/targets/: the service's grants in the namespaces of targets other than its
//! own. Checked as `kubectl kustomize` renders them: in every namespace the component lists, the
//! Role grants exactly the calls the code makes (the RBAC = code check of deploy/role.yaml) and
//! is bound to the service's ServiceAccount in its own namespace, the manual backup Job has its
//! account (no rights, no token), nothing else lands there, and the admission policy governs
//! the Jobs the service may create in each of them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::rbac::assert_grants_exactly_the_namespaced_calls;
use super::render::rendered;
use super::*;

/// The service's ServiceAccount (serviceaccount.yaml), which every grant names.
const SERVICE_ACCOUNT: &str = "backup-remediator";

/// The namespaces the targets component lists: the `namespace` of each folder it takes.
pub(super) fn target_namespaces() -> Vec<String> {
    kustomizations(&format!("deploy/{TARGETS_COMPONENT}"))
        .iter()
        .filter_map(|k| yaml(k)["namespace"].as_str().map(str::to_owned))
        .collect()
}

fn namespace_of(doc: &Value) -> Option<&str> {
    doc["metadata"]["namespace"].as_str()
}

fn typed<K: DeserializeOwned>(doc: &Value) -> K {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", doc["kind"]))
}

/// The object of kind `K` among `docs`, typed.
fn the_one<K: Resource + DeserializeOwned>(docs: &[&Value]) -> K {
    let doc = docs.iter().find(|d| is::<K>(d));
    typed(doc.unwrap_or_else(|| panic!("no {}", K::KIND)))
}

/// Whether `selector` (a namespaceSelector; none selects every namespace) selects a namespace
/// with `labels`.
fn selects_namespace(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = |e: &LabelSelectorRequirement| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("a label selector operator Kubernetes does not have: {other}"),
        }
    };
    by_label
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(by_expression)
}

#[test]
fn the_targets_component_lists_namespaces_other_than_the_services_own() {
    let home = configured().kubernetes.namespace;
    let targets = target_namespaces();
    assert!(
        !targets.is_empty(),
        "{TARGETS_COMPONENT} lists no namespace"
    );
    assert!(
        !targets.contains(&home),
        "{TARGETS_COMPONENT} lists {home}, which deploy/role.yaml already covers"
    );
    let distinct: BTreeSet<&String> = targets.iter().collect();
    assert_eq!(distinct.len(), targets.len(), "a namespace listed twice");
}

#[test]
fn every_target_namespace_gets_the_services_role_granting_exactly_the_calls_the_code_makes() {
    let home = configured().kubernetes.namespace;
    let targets: BTreeSet<String> = target_namespaces().into_iter().collect();
    let base: Role = object("deploy/role.yaml");
    let home_account: ServiceAccount = object("deploy/manual-backup-serviceaccount.yaml");
    let docs = rendered(&[TARGETS_COMPONENT]);

    let elsewhere: BTreeSet<String> = docs
        .iter()
        .filter_map(namespace_of)
        .filter(|ns| *ns != home)
        .map(str::to_owned)
        .collect();
    assert_eq!(
        elsewhere, targets,
        "the namespaces outside {home} that objects land in"
    );
    for ns in &targets {
        let here: Vec<&Value> = docs
            .iter()
            .filter(|d| namespace_of(d) == Some(ns))
            .collect();
        let kinds: BTreeSet<&str> = here.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            (here.len(), kinds),
            (3, BTreeSet::from(["Role", "RoleBinding", "ServiceAccount"])),
            "{ns}: the service's Role and RoleBinding and the manual backup's account, nothing else"
        );
        let account: ServiceAccount = the_one::<ServiceAccount>(&here);
        assert_eq!(
            (
                account.metadata.name,
                account.automount_service_account_token
            ),
            (home_account.metadata.name.clone(), Some(false)),
            "{ns}: the manual backup Job's account, without a token"
        );
        let role: Role = the_one::<Role>(&here);
        let binding: RoleBinding = the_one::<RoleBinding>(&here);

        assert_eq!(
            (binding.role_ref.kind.as_str(), Some(&binding.role_ref.name)),
            ("Role", role.metadata.name.as_ref()),
            "{ns}: the binding's roleRef"
        );
        let subjects: Vec<_> = binding
            .subjects
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.kind, s.name, s.namespace))
            .collect();
        assert_eq!(
            subjects,
            [(
                "ServiceAccount".to_owned(),
                SERVICE_ACCOUNT.to_owned(),
                Some(home.clone())
            )],
            "{ns}: the binding's subject is the service in {home}"
        );
        let rules = role.rules.unwrap_or_default();
        assert_grants_exactly_the_namespaced_calls(&format!("the Role in {ns}"), &rules);
        assert_eq!(
            Some(rules),
            base.rules,
            "{ns}: the Role's rules differ from deploy/role.yaml's"
        );
    }
}

#[test]
fn the_admission_policy_governs_the_jobs_the_service_may_create_in_every_namespace() {
    let home = configured().kubernetes.namespace;
    let docs = rendered(&[TARGETS_COMPONENT]);
    let ours = |b: &RoleBinding| {
        b.subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == SERVICE_ACCOUNT
                && s.namespace.as_deref() == Some(home.as_str())
        })
    };
    let creates_jobs = |r: &Role| {
        r.rules.iter().flatten().any(|rule| {
            let has = |l: &Option<Vec<String>>, x: &str| l.iter().flatten().any(|y| y == x);
            has(&rule.api_groups, "batch")
                && has(&rule.resources, "jobs")
                && rule.verbs.iter().any(|v| v == "create")
        })
    };
    let roles: Vec<Role> = docs.iter().filter(|d| is::<Role>(d)).map(typed).collect();
    let mut may_create_jobs = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| is::<RoleBinding>(d))
        .map(typed::<RoleBinding>)
    {
        let ns = binding.metadata.namespace.clone().unwrap_or_default();
        let role = roles.iter().find(|r| {
            r.metadata.namespace.as_deref() == Some(ns.as_str())
                && r.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())
        });
        if ours(&binding) && role.is_some_and(creates_jobs) {
            may_create_jobs.insert(ns);
        }
    }
    let expected: BTreeSet<String> = target_namespaces()
        .into_iter()
        .chain([home.clone()])
        .collect();
    assert_eq!(
        may_create_jobs, expected,
        "where the service may create Jobs"
    );

    let binding: ValidatingAdmissionPolicyBinding = docs
        .iter()
        .find(|d| is::<ValidatingAdmissionPolicyBinding>(d))
        .map(typed)
        .expect("the admission policy's binding");
    let resources = binding
        .spec
        .and_then(|s| s.match_resources)
        .unwrap_or_default();
    assert!(
        resources
            .object_selector
            .is_none_or(|s| s == LabelSelector::default()),
        "an objectSelector would let a Job out of the policy by its labels"
    );
    for ns in may_create_jobs {
        // Every namespace carries its own name in this label (since Kubernetes 1.22).
        let labels = BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns.clone())]);
        assert!(
            selects_namespace(resources.namespace_selector.as_ref(), &labels),
            "the service may create Jobs in {ns}, and admission-policy.yaml's binding does not select it: \
             `create jobs` is not contained there"
        );
    }
}
