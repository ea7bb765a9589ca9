//! The RBAC in deploy/ grants exactly the calls in `KUBE_API_CALLS`: the base Role the calls every
//! policy needs, each opt-in component exactly its action's calls, the ClusterRole only
//! StorageClasses; objects read by a configured name are restricted to that name.

use super::*;

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
        // CloudNativePG's (not in k8s-openapi): namespaced custom resources.
        cnpg("clusters"),
        cnpg("backups"),
        cnpg("scheduledbackups"),
    ]
}

fn cnpg(plural: &'static str) -> Known {
    Known {
        group: "postgresql.cnpg.io",
        plural,
        cluster_scoped: false,
    }
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

/// The opt-in component an action's (or a backup source's) calls are granted by, if any.
fn component_of(call: &ApiCall) -> Option<&'static str> {
    let (name, components) = match (call.only_for_action, call.only_for_source) {
        (Some(action), _) => (action, OPT_IN_COMPONENTS),
        (None, Some(source)) => (source, SOURCE_COMPONENTS),
        (None, None) => return None,
    };
    components.iter().find(|(a, _)| *a == name).map(|(_, c)| *c)
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

/// `rules` (of the Role in `what`) grant exactly the namespaced calls every policy needs, and
/// name each object the service reads by its configured name.
pub(super) fn assert_grants_exactly_the_namespaced_calls(what: &str, rules: &[PolicyRule]) {
    let granted = grants(what, rules);
    let needed: BTreeSet<Grant> = KUBE_API_CALLS
        .iter()
        .filter(|c| !cluster_scoped(c) && component_of(c).is_none())
        .map(grant)
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "calls the code makes that {what} does not grant: {missing:?}"
    );
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(
        extra.is_empty(),
        "{what} grants calls the code does not make: {extra:?}"
    );
    assert_names_restricted(what, rules);
}

#[test]
fn the_role_grants_exactly_the_namespaced_calls_the_code_makes() {
    let role = bound_role("deploy/role.yaml");
    assert_grants_exactly_the_namespaced_calls("deploy/role.yaml", &role.rules.unwrap_or_default());
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
fn each_source_component_grants_exactly_its_probes_reads() {
    for (source, component) in SOURCE_COMPONENTS {
        let files = kustomization_resources(&format!("deploy/{component}"));
        assert_eq!(
            files.len(),
            1,
            "{component}: one file with a Role and its binding"
        );
        let role = bound_role(&files[0]);
        let granted = grants(&files[0], &role.rules.unwrap_or_default());
        let needed: BTreeSet<Grant> = KUBE_API_CALLS
            .iter()
            .filter(|c| c.only_for_source == Some(source))
            .map(grant)
            .collect();
        assert!(
            !needed.is_empty(),
            "{source}: no call needs {component}; remove it"
        );
        assert_eq!(granted, needed, "{}", files[0]);
        assert!(
            granted
                .iter()
                .all(|(verb, _, _)| verb == "get" || verb == "list"),
            "{}: a source's probe only reads",
            files[0]
        );
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
