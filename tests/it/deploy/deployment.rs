//! The Deployment runs unprivileged, sized from the measured footprint, and agrees with the
//! Service, the probes, the ConfigMap, the PodDisruptionBudget and the NetworkPolicy.

use super::*;

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
    let wanted: BTreeSet<_> = SECRET_ENV
        .iter()
        .map(|(_, k)| k.to_string())
        .chain(SECRET_FILES.iter().map(|(k, _)| k.to_string()))
        .collect();
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
    let ingress = np.ingress.unwrap_or_default();
    // Who may reach the service: monitoring (Alertmanager, Prometheus) and the ingress controller
    // that forwards Slack's interactions.
    let from: Vec<String> = ingress
        .iter()
        .flat_map(|r| r.from.clone().unwrap_or_default())
        .filter_map(|peer| {
            match_labels(peer.namespace_selector)
                .get("kubernetes.io/metadata.name")
                .cloned()
        })
        .collect();
    assert_eq!(from, ["monitoring", "ingress-nginx"], "ingress sources");
    let ingress_ports = numbers(ingress.into_iter().map(|r| r.ports));
    assert_eq!(
        ingress_ports,
        [http.container_port, http.container_port],
        "ingress"
    );
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

#[test]
fn the_credentials_are_files_from_the_secret_that_the_service_re_reads() {
    let d = deployment();
    let c = container(&d);
    let settings = configured();
    let file_of = |key: &str| match key {
        "auth.webhook_token_file" => settings.auth.webhook_token_file.clone(),
        "auth.readers_file" => settings.auth.readers_file.clone(),
        "auth.admins_file" => settings.auth.admins_file.clone(),
        other => panic!("{other}"),
    };
    let volumes = pod_spec(&d).volumes.unwrap_or_default();
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    for (secret_key, config_key) in SECRET_FILES {
        let file = file_of(config_key);
        let file = Path::new(&file);
        assert!(
            file.is_absolute(),
            "deploy/config.toml must set {config_key}"
        );
        let mount = mounts
            .iter()
            .find(|m| Some(Path::new(&m.mount_path)) == file.parent())
            .unwrap_or_else(|| panic!("{config_key}: {} is not mounted", file.display()));
        assert_eq!(
            mount.sub_path, None,
            "a subPath mount never sees the Secret change: rotation would need a restart"
        );
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .expect("the mounted volume");
        let secret = volume.secret.clone().expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some(SECRET_NAME));
        let items = secret.items.unwrap_or_default();
        let item = items
            .iter()
            .find(|i| i.key == *secret_key)
            .unwrap_or_else(|| panic!("the Secret's key {secret_key} is not mounted"));
        assert_eq!(
            Some(item.path.as_str()),
            file.file_name().and_then(|f| f.to_str()),
            "{config_key}"
        );
        // Only credential keys become files: never the database URL or cloud keys.
        assert!(items
            .iter()
            .all(|i| SECRET_FILES.iter().any(|(k, _)| *k == i.key)));
    }
    let env = c.env.clone().unwrap_or_default();
    for var in ["BR_WEBHOOK_TOKEN", "BR_API_TOKEN", "BR_ADMIN_TOKEN"] {
        assert!(
            env.iter().all(|e| e.name != var),
            "{var} alongside the files: a token that cannot rotate without a restart"
        );
    }
}
