//! The Jobs the service creates pass Pod Security "restricted": the manual backup Job as built,
//! and a verification Job copied from a compliant CronJob (the copy must not weaken it). The
//! checker itself is shown to catch each control it claims to check.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};

use super::fixtures::{compliant_cronjob, manual_backup_job, verification_job};
use super::pod_security::restricted_violations;
use super::{all_objects, configured, is, object};

fn pod_spec(job: &Job) -> PodSpec {
    let template = job.spec.as_ref().map(|s| s.template.clone());
    template.and_then(|t| t.spec).expect("a pod template spec")
}

/// The Job as the API server receives it: serialised to JSON and read back.
fn as_sent(job: &Job) -> Job {
    let json = serde_json::to_value(job).expect("serialising the Job");
    serde_json::from_value(json).expect("reading the Job back")
}

fn violations(job: &Job) -> Vec<String> {
    let job = as_sent(job);
    let template = job.spec.as_ref().map(|s| s.template.clone());
    restricted_violations(
        template.as_ref().and_then(|t| t.metadata.as_ref()),
        &pod_spec(&job),
    )
}

#[test]
fn the_manual_backup_job_passes_pod_security_restricted() {
    let job = manual_backup_job();

    assert_eq!(violations(&job), Vec::<String>::new());
}

#[test]
fn the_manual_backup_job_runs_as_its_own_account_with_configured_image_and_resources() {
    let s = configured();
    let m = &s.manual_backup;
    let spec = pod_spec(&manual_backup_job());

    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(m.service_account.as_str())
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some(m.image.as_str()));
    let resources = c.resources.clone().expect("resources");
    let quantities = |q: Option<BTreeMap<String, Quantity>>| -> BTreeMap<String, String> {
        q.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    };
    assert_eq!(quantities(resources.requests), m.resources.requests);
    assert_eq!(quantities(resources.limits), m.resources.limits);
    assert!(
        !m.resources.limits.is_empty() && !m.resources.requests.is_empty(),
        "the defaults set requests and limits"
    );

    // The root filesystem is read-only; the dump goes to an emptyDir where the script writes.
    let security = c.security_context.clone().expect("securityContext");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == backup_remediator::runbook::manual_backup::SCRATCH_DIR)
        .expect("a volume at the scratch directory");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("the scratch volume");
    assert!(volume.empty_dir.is_some(), "{volume:?}");
    assert!(
        backup_remediator::runbook::manual_backup::SCRIPT_TEMPLATE
            .contains("WORK=\"${TMPDIR:-/tmp}\""),
        "the script writes its dump somewhere else than the scratch volume"
    );
}

#[test]
fn the_manual_backup_account_exists_with_no_token_and_no_rights() {
    let name = configured().manual_backup.service_account;
    let account: ServiceAccount = object("deploy/manual-backup-serviceaccount.yaml");

    assert_eq!(account.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(account.automount_service_account_token, Some(false));
    for (file, doc) in all_objects() {
        if is::<RoleBinding>(&doc) || doc["kind"] == "ClusterRoleBinding" {
            for subject in doc["subjects"].as_array().into_iter().flatten() {
                assert_ne!(subject["name"], name.as_str(), "{file} grants it rights");
            }
        }
    }
}

#[test]
fn a_verification_job_from_a_compliant_cronjob_stays_compliant_and_unchanged() {
    let cronjob = compliant_cronjob();
    let template = cronjob.spec.clone().expect("spec").job_template;
    let template_pod = template.spec.clone().expect("job spec").template;
    assert_eq!(
        restricted_violations(
            template_pod.metadata.as_ref(),
            template_pod.spec.as_ref().expect("pod spec")
        ),
        Vec::<String>::new(),
        "the fixture itself must be compliant"
    );

    let job = verification_job(&cronjob);

    assert_eq!(violations(&job), Vec::<String>::new());
    let sent = as_sent(&job);
    assert_eq!(
        sent.spec.map(|s| s.template),
        template.spec.map(|s| s.template),
        "the copy changed the pod template"
    );
}

/// Applies `change` to the manual backup Job's JSON.
fn mutated(change: impl Fn(&mut Value)) -> Job {
    let mut json = serde_json::to_value(manual_backup_job()).expect("JSON");
    change(&mut json);
    serde_json::from_value(json).expect("still a Job")
}

#[test]
fn the_checker_finds_every_control_of_the_restricted_profile() {
    type Change = fn(&mut Value);
    let cases: &[(&str, Change)] = &[
        ("HostProcess", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["windowsOptions"] =
                json!({"hostProcess": true})
        }),
        ("Host Namespaces", |j| {
            j["spec"]["template"]["spec"]["hostNetwork"] = json!(true)
        }),
        ("Host Namespaces", |j| {
            j["spec"]["template"]["spec"]["hostPID"] = json!(true)
        }),
        ("Host Namespaces", |j| {
            j["spec"]["template"]["spec"]["hostIPC"] = json!(true)
        }),
        ("Privileged Containers", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
                json!(true)
        }),
        ("Capabilities", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
                ["add"] = json!(["SYS_ADMIN"])
        }),
        ("Capabilities", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
                ["add"] = json!(["CHOWN"])
        }),
        ("Capabilities", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] =
                json!({})
        }),
        ("HostPath Volumes", |j| {
            j["spec"]["template"]["spec"]["volumes"][0] =
                json!({"name": "scratch", "hostPath": {"path": "/var/lib/kubelet"}})
        }),
        ("Volume Types", |j| {
            j["spec"]["template"]["spec"]["volumes"][0] =
                json!({"name": "scratch", "nfs": {"server": "nfs", "path": "/"}})
        }),
        ("Host Ports", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["ports"] =
                json!([{"containerPort": 80, "hostPort": 80}])
        }),
        ("AppArmor", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["appArmorProfile"] =
                json!({"type": "Unconfined"})
        }),
        ("AppArmor", |j| {
            j["spec"]["template"]["metadata"]["annotations"] = json!({
                "container.apparmor.security.beta.kubernetes.io/manual-backup": "unconfined"
            })
        }),
        ("SELinux", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["seLinuxOptions"] =
                json!({"type": "spc_t"})
        }),
        ("SELinux", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seLinuxOptions"] =
                json!({"user": "system_u"})
        }),
        ("/proc Mount Type", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["procMount"] =
                json!("Unmasked")
        }),
        ("Seccomp", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] =
                json!({"type": "Unconfined"})
        }),
        ("Seccomp", |j| {
            j["spec"]["template"]["spec"]["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("seccompProfile"));
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("seccompProfile"));
        }),
        ("Sysctls", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["sysctls"] =
                json!([{"name": "kernel.msgmax", "value": "65536"}])
        }),
        ("Privilege Escalation", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                ["allowPrivilegeEscalation"] = json!(true)
        }),
        ("Privilege Escalation", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("allowPrivilegeEscalation"));
        }),
        ("Running as Non-root", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] =
                json!(false)
        }),
        ("Running as Non-root", |j| {
            j["spec"]["template"]["spec"]["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("runAsNonRoot"));
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]
                .as_object_mut()
                .map(|o| o.remove("runAsNonRoot"));
        }),
        ("Running as Non-root user", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = json!(0)
        }),
        ("Running as Non-root user", |j| {
            j["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] =
                json!(0)
        }),
        ("Non-root groups", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["runAsGroup"] = json!(0)
        }),
        ("Non-root groups", |j| {
            j["spec"]["template"]["spec"]["securityContext"]["supplementalGroups"] = json!([0])
        }),
        ("Privileged Containers", |j| {
            let mut init = j["spec"]["template"]["spec"]["containers"][0].clone();
            init["name"] = json!("init");
            init["securityContext"]["privileged"] = json!(true);
            j["spec"]["template"]["spec"]["initContainers"] = json!([init]);
        }),
    ];
    assert_eq!(violations(&manual_backup_job()), Vec::<String>::new());
    for (i, (control, change)) in cases.iter().enumerate() {
        let found = violations(&mutated(change));

        assert!(
            found.iter().any(|v| v.starts_with(&format!("{control}:"))),
            "case {i}: {control} not found, only {found:?}"
        );
    }
}
