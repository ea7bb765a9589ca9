//! What the end-to-end tests read back from the world: steps, states, timeline kinds, patches
//! the service sent to the API server, roles in the real PostgreSQL; and the texts they share.

use serde_json::Value;

use super::World;
use crate::support::cluster::proxy::Recorded;
use crate::support::pg;

pub fn step<'a>(incident: &'a Value, name: &str) -> &'a Value {
    incident["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} step: {:#}", incident["actions"]))
}

pub fn states(incident: &Value) -> Vec<(String, String)> {
    incident["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub fn finding<'a>(incident: &'a Value, probe: &str) -> &'a Value {
    incident["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["probe"] == probe)
        .unwrap_or_else(|| panic!("no {probe} finding"))
}

pub fn evidence_texts(incident: &Value) -> Vec<String> {
    incident["diagnosis"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "[{} {}] {}",
                e["kind"].as_str().unwrap(),
                e["probe"].as_str().unwrap(),
                e["text"].as_str().unwrap()
            )
        })
        .collect()
}

pub fn assert_scenario(incident: &Value, scenario: &str, direct: &str, log: &str) {
    let d = &incident["diagnosis"];
    let ev = evidence_texts(incident);
    assert_eq!(
        d["scenario"], scenario,
        "{}\nevidence: {ev:#?}",
        d["summary"]
    );
    assert_eq!(
        d["confidence"], 0.95,
        "a probe and the job's log agree: {ev:#?} {:#}",
        incident["findings"]
    );
    assert!(
        ev.iter()
            .any(|e| e.starts_with("[direct") && e.contains(direct)),
        "no direct evidence containing {direct:?}: {ev:#?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.starts_with("[log backup_job]") && e.contains(log)),
        "no log evidence containing {log:?}: {ev:#?}"
    );
    assert_eq!(
        incident["findings"].as_array().unwrap().len(),
        backup_remediator::domain::finding::NAMES.len(),
        "every probe reported"
    );
    assert!(
        d["context"].as_array().unwrap().iter().any(|c| c
            .as_str()
            .unwrap()
            .starts_with("last successful backup 30 h")),
        "the RPO exposure is part of the diagnosis: {}",
        d["context"]
    );
}

pub const FAILED_DUMP: &str = "Starting backup of link_users\n";

/// A policy file with the defaults of docs/src/policy.md (so not a dry run).
pub const LIVE: &str = "# the defaults\ndry_run = false\n";
pub const T2: &str = "2026-11-24T08:30:00Z";

/// Drops a role the service created, after the test's databases are gone.
pub struct DropRole(pub String);

impl Drop for DropRole {
    fn drop(&mut self) {
        let role = self.0.clone();
        pg::on_own_runtime(move || async move {
            use sqlx::Executor;
            let mut c = pg::admin_on("postgres").await;
            let sql: String =
                sqlx::query_scalar("SELECT format('DROP ROLE IF EXISTS %I', $1::text)")
                    .bind(&role)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            let _ = c.execute(sql.as_str()).await;
        });
    }
}

pub async fn role_exists(role: &str) -> bool {
    let mut c = pg::admin_on("postgres").await;
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

pub fn patches(w: &World, path_end: &str) -> Vec<Recorded> {
    w.kube
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(path_end))
        .collect()
}

pub fn timeline_kinds(incident: &Value) -> Vec<String> {
    incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

pub const ROLE_GONE_LOG: &str =
    "pg_dump: error: connection to server failed: FATAL:  role does not exist\n";
pub const DISK_FULL_LOG: &str =
    "pg_dump: error: could not write to output file: No space left on device\n";
