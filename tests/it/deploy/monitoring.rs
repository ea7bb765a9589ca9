//! The alert rules, the ServiceMonitor, the Alertmanager receiver and the dashboard: promtool
//! and amtool pass them, and they use only metrics the service emits.

use super::*;

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
            (
                "rules.test.yml",
                read("tests/it/deploy/alert-rules.test.yml"),
            ),
        ],
        &["test", "rules", "rules.test.yml"],
    );
}

#[test]
fn the_alert_rules_include_the_runbook_and_service_alerts() {
    let alerts: BTreeSet<String> = rule_fields("alert").into_iter().collect();
    for name in [
        "PostgreSQLBackupFailed",
        "PostgreSQLBackupStale",
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
    // The Operator ignores a ServiceMonitor its selector does not match: the file says which
    // label to add.
    assert!(
        read(SERVICE_MONITOR).contains("release:"),
        "the `release` label note"
    );
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

/// Every `backup_remediator_*` metric the service exports: the names src/metrics.rs defines.
fn emitted_metrics() -> BTreeSet<String> {
    let name = regex::Regex::new(r#""(backup_remediator_[a-z_]+)""#).expect("a regex");
    name.captures_iter(&read("src/metrics.rs"))
        .map(|c| c[1].to_owned())
        .collect()
}

#[test]
fn only_src_metrics_rs_names_metrics() {
    let name = regex::Regex::new(r#""backup_remediator_[a-z_]+""#).expect("a regex");
    for file in files_under("src").iter().filter(|f| f.ends_with(".rs")) {
        if file != "src/metrics.rs" {
            let text = read(file);
            let spelled = name.find(&text).map(|m| m.as_str());
            assert_eq!(
                spelled, None,
                "{file} spells a metric name; call src/metrics.rs"
            );
        }
    }
}

#[test]
fn every_metric_the_service_exports_is_documented_in_the_book() {
    let page = read("docs/src/operating.md");
    let start = page
        .find("\n## Metrics\n")
        .expect("a Metrics section in docs/src/operating.md");
    let section = &page[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let emitted = emitted_metrics();
    assert!(
        emitted.len() >= 20,
        "only {} metrics in src/metrics.rs",
        emitted.len()
    );
    for name in emitted {
        assert!(
            section.contains(&format!("`{name}`")) || section.contains(&format!("`{name}{{")),
            "{name} is not documented in the Metrics section of docs/src/operating.md"
        );
    }
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
