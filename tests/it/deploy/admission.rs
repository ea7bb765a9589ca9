//! deploy/admission-policy.yaml's CEL, evaluated as the API server evaluates a
//! ValidatingAdmissionPolicy (matchConditions, then `variables` in order, then each validation),
//! with cel-interpreter, against the Jobs the code builds (admitted) and hostile ones (refused).
//! The expressions are read from the YAML file itself: what is tested is what is applied.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::{Context, Program, Value as Cel};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::{json, Value};

use super::fixtures::{compliant_cronjob, manual_backup_job, verification_job};
use super::{configured, object};

const POLICY_FILE: &str = "deploy/admission-policy.yaml";

/// The API server's JSON as a CEL value: objects are maps, integers are `int`.
fn cel(v: &Value) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(Cel::Int)
            .unwrap_or_else(|| Cel::Float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(cel).collect())),
        Value::Object(o) => {
            let map: HashMap<String, Cel> = o.iter().map(|(k, v)| (k.clone(), cel(v))).collect();
            map.into()
        }
    }
}

/// The policy's expressions, compiled.
struct Policy {
    match_conditions: Vec<(String, Program)>,
    variables: Vec<(String, Program)>,
    validations: Vec<(String, Program)>,
}

fn compile(what: &str, expression: &str) -> Program {
    Program::compile(expression).unwrap_or_else(|e| panic!("{POLICY_FILE}: {what}: {e:?}"))
}

fn policy_object() -> ValidatingAdmissionPolicy {
    object(POLICY_FILE)
}

fn policy() -> Policy {
    let spec = policy_object().spec.expect("the policy's spec");
    Policy {
        match_conditions: spec
            .match_conditions
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let p = compile(&c.name, &c.expression);
                (c.name, p)
            })
            .collect(),
        variables: spec
            .variables
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let p = compile(&v.name, &v.expression);
                (v.name, p)
            })
            .collect(),
        validations: spec
            .validations
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                let message = v.message.unwrap_or_default();
                let p = compile(&message, &v.expression);
                (message, p)
            })
            .collect(),
    }
}

/// What the API server would answer.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Not matched: the policy does not apply to this request.
    NotMatched,
    Admitted,
    /// Refused by the validations with these messages.
    Refused(Vec<String>),
}

fn as_bool(what: &str, v: Result<Cel, cel_interpreter::ExecutionError>) -> bool {
    match v {
        Ok(Cel::Bool(b)) => b,
        // failurePolicy Fail would refuse; here it means the expression does not fit the object.
        other => panic!("{what} did not evaluate to a bool: {other:?}"),
    }
}

/// Evaluates `policy` for a CREATE of `job` by `username`.
fn decide(policy: &Policy, job: &Job, username: &str) -> Decision {
    let object = serde_json::to_value(job).expect("the Job as JSON");
    let mut ctx = Context::default();
    ctx.add_variable_from_value("object", cel(&object));
    ctx.add_variable_from_value("oldObject", Cel::Null);
    ctx.add_variable_from_value(
        "request",
        cel(&json!({"operation": "CREATE", "userInfo": {"username": username}})),
    );
    for (name, condition) in &policy.match_conditions {
        if !as_bool(name, condition.execute(&ctx)) {
            return Decision::NotMatched;
        }
    }
    let mut variables: HashMap<String, Cel> = HashMap::new();
    for (name, expression) in &policy.variables {
        ctx.add_variable_from_value("variables", variables.clone());
        let value = expression
            .execute(&ctx)
            .unwrap_or_else(|e| panic!("variable {name}: {e:?}"));
        variables.insert(name.clone(), value);
    }
    ctx.add_variable_from_value("variables", variables);
    let refused: Vec<String> = policy
        .validations
        .iter()
        .filter(|(message, p)| !as_bool(message, p.execute(&ctx)))
        .map(|(message, _)| message.clone())
        .collect();
    if refused.is_empty() {
        Decision::Admitted
    } else {
        Decision::Refused(refused)
    }
}

/// `system:serviceaccount:<namespace>:<name>` of the service's own ServiceAccount.
fn service_user() -> String {
    let sa: ServiceAccount = object("deploy/serviceaccount.yaml");
    format!(
        "system:serviceaccount:{}:{}",
        sa.metadata.namespace.unwrap_or_default(),
        sa.metadata.name.unwrap_or_default()
    )
}

#[test]
fn the_policy_admits_the_jobs_the_service_creates() {
    let policy = policy();
    let user = service_user();
    let cronjob = compliant_cronjob();
    let owner_only = backup_remediator::infra::jobs::job_from_cronjob(
        &cronjob,
        "postgres-backup-verify-8-1",
        &Default::default(),
    )
    .expect("a Job");

    for (what, job) in [
        ("the manual backup", manual_backup_job()),
        ("a verification run", verification_job(&cronjob)),
        ("a verification run, owner only", owner_only),
    ] {
        assert_eq!(decide(&policy, &job, &user), Decision::Admitted, "{what}");
    }
}

#[test]
fn the_policy_leaves_other_users_jobs_alone() {
    let mut hostile = serde_json::to_value(manual_backup_job()).expect("JSON");
    hostile["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
    let job: Job = serde_json::from_value(hostile).expect("a Job");

    for user in [
        "system:serviceaccount:kube-system:cronjob-controller",
        "system:serviceaccount:link-services:default",
        "jane@example.com",
    ] {
        assert_eq!(
            decide(&policy(), &job, user),
            Decision::NotMatched,
            "{user}"
        );
    }
}

/// Which validation is expected to refuse (a word of its message) and how the Job is changed.
type Hostile = (&'static str, &'static str, fn(&mut Value));

const HOSTILE: &[Hostile] = &[
    (
        "no owner and no label",
        "owned by the backup CronJob",
        |j| j["metadata"]["labels"] = json!({"app": "postgres-manual-backup"}),
    ),
    (
        "another manager's label",
        "owned by the backup CronJob",
        |j| j["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("someone-else"),
    ),
    (
        "owned by another CronJob",
        "owned by the backup CronJob",
        |j| {
            j["metadata"]["labels"] = json!({});
            j["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob",
            "name": "payments-export", "uid": "1", "controller": true}]);
        },
    ),
    ("an image not allowed", "images", |j| {
        j["spec"]["template"]["spec"]["containers"][0]["image"] = json!("alpine:latest")
    }),
    ("an allowed image's name with another tag", "images", |j| {
        j["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:16")
    }),
    ("an init container with another image", "images", |j| {
        j["spec"]["template"]["spec"]["initContainers"] =
            json!([{"name": "x", "image": "evil.example/miner:1"}])
    }),
    ("an ephemeral container", "images", |j| {
        j["spec"]["template"]["spec"]["ephemeralContainers"] =
            json!([{"name": "x", "image": "postgres:16-alpine"}])
    }),
    ("another ServiceAccount", "ServiceAccount", |j| {
        j["spec"]["template"]["spec"]["serviceAccountName"] = json!("postgres-admin")
    }),
    (
        "the deprecated serviceAccount field",
        "ServiceAccount",
        |j| j["spec"]["template"]["spec"]["serviceAccount"] = json!("postgres-admin"),
    ),
    ("the service's own ServiceAccount", "ServiceAccount", |j| {
        j["spec"]["template"]["spec"]["serviceAccountName"] = json!("backup-remediator")
    }),
    ("another Secret as a volume", "Secret", |j| {
        j["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "s", "secret": {"secretName": "backup-remediator"}}])
    }),
    ("another Secret in a projected volume", "Secret", |j| {
        j["spec"]["template"]["spec"]["volumes"] = json!([{"name": "s", "projected": {"sources": [
            {"secret": {"name": "postgres-backup-secret"}},
            {"secret": {"name": "postgres-superuser"}}]}}])
    }),
    ("another Secret's key in env", "Secret", |j| {
        j["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
            ["name"] = json!("postgres-superuser")
    }),
    ("another Secret as envFrom", "Secret", |j| {
        j["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
            json!([{"secretRef": {"name": "backup-remediator"}}])
    }),
    ("a hostPath volume", "volumes", |j| {
        j["spec"]["template"]["spec"]["volumes"] =
            json!([{"name": "node", "hostPath": {"path": "/"}}])
    }),
    ("the database's volume claim", "volumes", |j| {
        j["spec"]["template"]["spec"]["volumes"] = json!([{"name": "data",
            "persistentVolumeClaim": {"claimName": "postgres-data-postgres-primary-0"}}])
    }),
    ("the node's network", "node's network", |j| {
        j["spec"]["template"]["spec"]["hostNetwork"] = json!(true)
    }),
    ("the node's PID namespace", "node's network", |j| {
        j["spec"]["template"]["spec"]["hostPID"] = json!(true)
    }),
    ("a privileged container", "privileged", |j| {
        j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
            json!(true)
    }),
    ("an added capability", "capabilities", |j| {
        j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
            json!(["SYS_ADMIN"])
    }),
    ("a host port", "host ports", |j| {
        j["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 5432, "hostPort": 5432}])
    }),
];

#[test]
fn the_policy_refuses_hostile_jobs_from_the_services_account() {
    let policy = policy();
    let user = service_user();

    for (what, refused_by, change) in HOSTILE {
        let mut json = serde_json::to_value(manual_backup_job()).expect("JSON");
        change(&mut json);
        let job: Job = serde_json::from_value(json).unwrap_or_else(|e| panic!("{what}: {e}"));

        match decide(&policy, &job, &user) {
            Decision::Refused(messages) => assert!(
                messages.iter().any(|m| m.contains(refused_by)),
                "{what}: refused, but not for {refused_by:?}: {messages:?}"
            ),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_hostile_change_to_a_verification_job_is_refused_too() {
    let policy = policy();
    let mut json = serde_json::to_value(verification_job(&compliant_cronjob())).expect("JSON");
    json["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil.example/miner:1");
    let job: Job = serde_json::from_value(json).expect("a Job");

    let decision = decide(&policy, &job, &service_user());

    assert!(matches!(decision, Decision::Refused(_)), "{decision:?}");
}

/// The value of the policy's variable `name` (a literal): a string or a list of strings.
fn literal(name: &str) -> Vec<String> {
    let spec = policy_object().spec.expect("spec");
    let variable = spec
        .variables
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == name);
    let expression = variable
        .unwrap_or_else(|| panic!("no variable {name}"))
        .expression;
    let value = compile(name, &expression)
        .execute(&Context::default())
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let string = |v: &Cel| match v {
        Cel::String(s) => s.to_string(),
        other => panic!("{name}: {other:?} is not a string"),
    };
    match &value {
        Cel::List(items) => items.iter().map(string).collect(),
        other => vec![string(other)],
    }
}

#[test]
fn the_policy_agrees_with_the_configuration_and_is_bound_to_deny() {
    let s = configured();
    let in_list = |name: &str, wanted: &str| {
        assert!(
            literal(name).iter().any(|x| x == wanted),
            "{POLICY_FILE}: {name} lacks {wanted}"
        );
    };
    in_list("allowedImages", &s.manual_backup.image);
    in_list("allowedServiceAccounts", &s.manual_backup.service_account);
    assert_eq!(
        literal("backupSecret"),
        [s.kubernetes.backup_secret.as_str()]
    );
    assert_eq!(
        literal("backupCronJob"),
        [s.kubernetes.backup_cronjob.as_str()]
    );
    let policy = policy_object();
    let spec = policy.spec.clone().expect("spec");
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    let conditions = spec.match_conditions.unwrap_or_default();
    assert!(
        conditions
            .iter()
            .any(|c| c.expression.contains(&service_user())),
        "the match condition does not name {}",
        service_user()
    );
    let rules = spec
        .match_constraints
        .and_then(|m| m.resource_rules)
        .unwrap_or_default();
    assert!(rules.iter().any(|r| {
        let has = |l: &Option<Vec<String>>, x: &str| l.iter().flatten().any(|y| y == x);
        has(&r.api_groups, "batch") && has(&r.resources, "jobs") && has(&r.operations, "CREATE")
    }));

    let binding: ValidatingAdmissionPolicyBinding = object(POLICY_FILE);
    let b = binding.spec.expect("binding spec");
    assert_eq!(b.policy_name, policy.metadata.name);
    assert_eq!(b.validation_actions, Some(vec!["Deny".to_owned()]));
    // The namespaces it covers (every one the service may create Jobs in): targets.rs.
}
