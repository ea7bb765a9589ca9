//! The Kubernetes Pod Security Standards, "restricted" profile (which includes "baseline"), as
//! a checker for pod templates: <https://kubernetes.io/docs/concepts/security/pod-security-standards/>
//! (policy version v1.30). Each control of the standard's two tables is one block below, named
//! as the standard names it; [`restricted_violations`] returns every field that breaks one, so
//! an empty list means the namespace label `pod-security.kubernetes.io/enforce: restricted`
//! admits the pod. Linux pods only (the Windows-only exemptions do not apply to our Jobs).

use k8s_openapi::api::core::v1::{Capabilities, PodSpec, SELinuxOptions, SeccompProfile};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Capabilities "baseline" allows a container to add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The "safe" sysctls baseline allows (v1.30 list).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// SELinux types baseline allows.
const SELINUX_TYPES: &[&str] = &["container_t", "container_init_t", "container_kvm_t"];

/// One container of any kind (containers, initContainers, ephemeralContainers), as the
/// standard's `containers[*]` covers all three.
struct AnyContainer<'a> {
    path: String,
    security: Option<&'a k8s_openapi::api::core::v1::SecurityContext>,
    host_ports: Vec<i32>,
}

fn all_containers(spec: &PodSpec) -> Vec<AnyContainer<'_>> {
    let ports = |p: &Option<Vec<k8s_openapi::api::core::v1::ContainerPort>>| {
        p.iter()
            .flatten()
            .filter_map(|p| p.host_port)
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        out.push(AnyContainer {
            path: format!("containers[{i}] {}", c.name),
            security: c.security_context.as_ref(),
            host_ports: ports(&c.ports),
        });
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        out.push(AnyContainer {
            path: format!("initContainers[{i}] {}", c.name),
            security: c.security_context.as_ref(),
            host_ports: ports(&c.ports),
        });
    }
    for (i, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        out.push(AnyContainer {
            path: format!("ephemeralContainers[{i}] {}", c.name),
            security: c.security_context.as_ref(),
            host_ports: ports(&c.ports),
        });
    }
    out
}

/// Every violation of Pod Security "restricted" by a pod with `meta` and `spec`, each as
/// "control: field = value". Empty when the pod is admitted.
pub fn restricted_violations(meta: Option<&ObjectMeta>, spec: &PodSpec) -> Vec<String> {
    let mut v = baseline_violations(meta, spec);
    v.extend(restricted_only_violations(spec));
    v
}

fn baseline_violations(meta: Option<&ObjectMeta>, spec: &PodSpec) -> Vec<String> {
    let mut v = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();
    let containers = all_containers(spec);

    // HostProcess: Windows host processes are forbidden.
    let host_process = |w: &Option<k8s_openapi::api::core::v1::WindowsSecurityContextOptions>| {
        w.as_ref().and_then(|w| w.host_process) == Some(true)
    };
    if host_process(&pod.windows_options) {
        v.push("HostProcess: spec.securityContext.windowsOptions.hostProcess = true".into());
    }
    for c in &containers {
        if c.security.is_some_and(|s| host_process(&s.windows_options)) {
            v.push(format!(
                "HostProcess: {}.securityContext.windowsOptions.hostProcess = true",
                c.path
            ));
        }
    }

    // Host Namespaces.
    for (field, value) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if value == Some(true) {
            v.push(format!("Host Namespaces: spec.{field} = true"));
        }
    }

    for c in &containers {
        let s = c.security.cloned().unwrap_or_default();
        // Privileged Containers.
        if s.privileged == Some(true) {
            v.push(format!(
                "Privileged Containers: {}.securityContext.privileged = true",
                c.path
            ));
        }
        // Capabilities (baseline): only the default set may be added.
        for cap in added(&s.capabilities) {
            if !BASELINE_CAPABILITIES.contains(&cap.as_str()) {
                v.push(format!(
                    "Capabilities: {}.securityContext.capabilities.add {cap}",
                    c.path
                ));
            }
        }
        // Host Ports.
        for port in &c.host_ports {
            if *port != 0 {
                v.push(format!("Host Ports: {}.ports[].hostPort = {port}", c.path));
            }
        }
        // AppArmor (field).
        if let Some(t) = s.app_armor_profile.as_ref().map(|p| p.type_.as_str()) {
            if !["RuntimeDefault", "Localhost"].contains(&t) {
                v.push(format!(
                    "AppArmor: {}.securityContext.appArmorProfile.type = {t}",
                    c.path
                ));
            }
        }
        // SELinux.
        v.extend(selinux(
            &format!("{}.securityContext", c.path),
            &s.se_linux_options,
        ));
        // /proc Mount Type.
        if let Some(m) = s.proc_mount.as_deref().filter(|m| *m != "Default") {
            v.push(format!(
                "/proc Mount Type: {}.securityContext.procMount = {m}",
                c.path
            ));
        }
        // Seccomp (baseline): never Unconfined.
        if unconfined(&s.seccomp_profile) {
            v.push(format!(
                "Seccomp: {}.securityContext.seccompProfile.type = Unconfined",
                c.path
            ));
        }
    }

    // HostPath Volumes.
    for vol in spec.volumes.iter().flatten() {
        if vol.host_path.is_some() {
            v.push(format!(
                "HostPath Volumes: spec.volumes[{}].hostPath",
                vol.name
            ));
        }
    }

    // AppArmor (pod field and the older annotations).
    if let Some(t) = pod.app_armor_profile.as_ref().map(|p| p.type_.as_str()) {
        if !["RuntimeDefault", "Localhost"].contains(&t) {
            v.push(format!(
                "AppArmor: spec.securityContext.appArmorProfile.type = {t}"
            ));
        }
    }
    let annotations = meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    for (k, value) in annotations {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && !(value == "runtime/default" || value.starts_with("localhost/"))
        {
            v.push(format!("AppArmor: annotation {k} = {value}"));
        }
    }

    // SELinux (pod), Seccomp (pod), Sysctls.
    v.extend(selinux("spec.securityContext", &pod.se_linux_options));
    if unconfined(&pod.seccomp_profile) {
        v.push("Seccomp: spec.securityContext.seccompProfile.type = Unconfined".into());
    }
    for sysctl in pod.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            v.push(format!(
                "Sysctls: spec.securityContext.sysctls {}",
                sysctl.name
            ));
        }
    }
    v
}

fn restricted_only_violations(spec: &PodSpec) -> Vec<String> {
    let mut v = Vec::new();
    let pod = spec.security_context.clone().unwrap_or_default();

    // Volume Types: only these kinds.
    for vol in spec.volumes.iter().flatten() {
        let allowed = vol.config_map.is_some()
            || vol.csi.is_some()
            || vol.downward_api.is_some()
            || vol.empty_dir.is_some()
            || vol.ephemeral.is_some()
            || vol.persistent_volume_claim.is_some()
            || vol.projected.is_some()
            || vol.secret.is_some();
        if !allowed {
            v.push(format!(
                "Volume Types: spec.volumes[{}] is not an allowed type",
                vol.name
            ));
        }
    }

    // Running as Non-root, Running as Non-root user (v1.23+), Seccomp (v1.19+): each pod-level
    // field may be left to the containers, but then every container must set it.
    let pod_non_root = pod.run_as_non_root;
    if pod_non_root == Some(false) {
        v.push("Running as Non-root: spec.securityContext.runAsNonRoot = false".into());
    }
    if pod.run_as_user == Some(0) {
        v.push("Running as Non-root user: spec.securityContext.runAsUser = 0".into());
    }
    let pod_seccomp_ok = confined(&pod.seccomp_profile);
    if pod.seccomp_profile.is_some() && !pod_seccomp_ok {
        v.push(
            "Seccomp: spec.securityContext.seccompProfile.type must be RuntimeDefault or Localhost"
                .into(),
        );
    }

    // Non-root groups: no pod or container group is root's.
    for (field, gid) in [("runAsGroup", pod.run_as_group), ("fsGroup", pod.fs_group)] {
        if gid == Some(0) {
            v.push(format!("Non-root groups: spec.securityContext.{field} = 0"));
        }
    }
    if pod.supplemental_groups.iter().flatten().any(|g| *g == 0) {
        v.push("Non-root groups: spec.securityContext.supplementalGroups contains 0".into());
    }

    for c in all_containers(spec) {
        let s = c.security.cloned().unwrap_or_default();
        let at = |f: &str| format!("{}.securityContext.{f}", c.path);
        // Privilege Escalation: must be set to false.
        if s.allow_privilege_escalation != Some(false) {
            v.push(format!(
                "Privilege Escalation: {} must be false",
                at("allowPrivilegeEscalation")
            ));
        }
        // Running as Non-root.
        match s.run_as_non_root {
            Some(false) => v.push(format!(
                "Running as Non-root: {} = false",
                at("runAsNonRoot")
            )),
            None if pod_non_root != Some(true) => v.push(format!(
                "Running as Non-root: {} unset and the pod does not set it",
                at("runAsNonRoot")
            )),
            _ => {}
        }
        // Running as Non-root user.
        if s.run_as_user == Some(0) {
            v.push(format!("Running as Non-root user: {} = 0", at("runAsUser")));
        }
        if s.run_as_group == Some(0) {
            v.push(format!("Non-root groups: {} = 0", at("runAsGroup")));
        }
        // Seccomp: RuntimeDefault or Localhost, here or on the pod.
        match &s.seccomp_profile {
            Some(_) if !confined(&s.seccomp_profile) => v.push(format!(
                "Seccomp: {} must be RuntimeDefault or Localhost",
                at("seccompProfile.type")
            )),
            None if !pod_seccomp_ok => v.push(format!(
                "Seccomp: {} unset and the pod does not set it",
                at("seccompProfile")
            )),
            _ => {}
        }
        // Capabilities (restricted): drop ALL; add at most NET_BIND_SERVICE.
        let drops_all = s
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.as_ref())
            .is_some_and(|d| d.iter().any(|d| d == "ALL"));
        if !drops_all {
            v.push(format!(
                "Capabilities: {} must contain ALL",
                at("capabilities.drop")
            ));
        }
        for cap in added(&s.capabilities) {
            if cap != "NET_BIND_SERVICE" {
                v.push(format!("Capabilities: {} {cap}", at("capabilities.add")));
            }
        }
    }
    v
}

fn added(c: &Option<Capabilities>) -> Vec<String> {
    c.as_ref().and_then(|c| c.add.clone()).unwrap_or_default()
}

fn unconfined(p: &Option<SeccompProfile>) -> bool {
    p.as_ref().is_some_and(|p| p.type_ == "Unconfined")
}

fn confined(p: &Option<SeccompProfile>) -> bool {
    p.as_ref()
        .is_some_and(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost")
}

fn selinux(at: &str, o: &Option<SELinuxOptions>) -> Vec<String> {
    let Some(o) = o else { return Vec::new() };
    let mut v = Vec::new();
    if let Some(t) = o.type_.as_deref().filter(|t| !t.is_empty()) {
        if !SELINUX_TYPES.contains(&t) {
            v.push(format!("SELinux: {at}.seLinuxOptions.type = {t}"));
        }
    }
    for (field, value) in [("user", &o.user), ("role", &o.role)] {
        if value.as_deref().is_some_and(|x| !x.is_empty()) {
            v.push(format!("SELinux: {at}.seLinuxOptions.{field} is set"));
        }
    }
    v
}
