//! End to end, one test per runbook scenario plus the transient case: the systems are put in
//! that broken state — the real PostgreSQL (a backup role of the test's own), the real Prometheus
//! (scraping backup and volume metrics the test serves), moto's S3 and IAM (a bucket holding a
//! real `pg_dump -Fc` archive encrypted by the real `openssl enc`), and the stand-in Kubernetes
//! API (Secret, backup Job with its pod and logs, the primary, the PVC) — a real alert is posted
//! to the running service, and the diagnosis it stores must name the right scenario for the
//! right reasons.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::approvals;
use crate::support::world;
use crate::support::{backup, pg};
use world::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_a_refused_database_connection() {
    let w = World::builder().database_down().job_failed_with_logs(&format!("{FAILED_DUMP}pg_dump: error: connection to server at \"postgres-primary.link-services.svc.cluster.local\" (10.0.0.5), port 5432 failed: Connection refused\n")).build()
    .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "database_connection",
        "refused the connection",
        "Connection refused",
    );
    assert_eq!(finding(&incident, "primary")["status"], "problem");
    assert!(finding(&incident, "primary")["summary"]
        .as_str()
        .unwrap()
        .contains("0/1 ready replicas"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_the_backup_role_does_not_exist() {
    let w = World::builder().backup_role_gone("backup_role_gone").job_failed_with_logs(&format!("{FAILED_DUMP}pg_dump: error: connection to server at \"postgres-primary\" (10.0.0.5), port 5432 failed: FATAL:  role \"backup_role_gone\" does not exist\n")).build()
    .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "authentication",
        "role backup_role_gone does not exist",
        "does not exist",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_the_data_volume_is_full() {
    let w = World::builder().volume_full().job_failed_with_logs(&format!("{FAILED_DUMP}pg_dump: error: could not write to output file: No space left on device\n")).build().await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "storage",
        "is 95% full",
        "No space left on device",
    );
    assert_eq!(
        finding(&incident, "disk")["evidence"]["claim"]["expandable"],
        true,
        "expansion is possible (for the playbook)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_4_the_bucket_is_gone() {
    let w = World::builder().bucket_gone().job_failed_with_logs(&format!("{FAILED_DUMP}Encrypting backup\nupload failed: An error occurred (NoSuchBucket) when calling the PutObject operation: The specified bucket does not exist\n")).build()
    .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "s3_access",
        "bucket link-backups-deleted does not exist",
        "NoSuchBucket",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_the_encryption_key_is_too_short() {
    let w = World::builder()
        .short_encryption_key()
        .job_failed_with_logs(&format!(
            "{FAILED_DUMP}encryption failed: key shorter than 32 bytes\n"
        ))
        .build()
        .await;
    let incident = w.alert_and_diagnose().await;
    assert_scenario(
        &incident,
        "encryption",
        "the encryption key is 9 bytes",
        "encryption failed",
    );
    assert!(
        !incident.to_string().contains("short-key"),
        "the key itself never reaches the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_nothing_explains_is_transient_and_every_probe_is_healthy() {
    let w = World::builder().job_failed_with_logs(&format!("{FAILED_DUMP}pg_dump: error: could not receive data from server: Connection reset by peer\n")).build().await;
    let incident = w.alert_and_diagnose().await;
    let d = &incident["diagnosis"];
    assert_eq!(d["scenario"], "transient_unknown", "{}", d["summary"]);
    assert_eq!(d["confidence"], 0.7);
    for probe in [
        "secret",
        "database",
        "primary",
        "disk",
        "s3",
        "iam",
        "encryption",
    ] {
        assert_eq!(
            finding(&incident, probe)["status"],
            "ok",
            "{probe}: {}",
            finding(&incident, probe)["summary"]
        );
    }
    let enc = finding(&incident, "encryption");
    assert_eq!(
        enc["evidence"]["newest_backup"]["decrypts_to_pg_dump"], true,
        "the newest real backup decrypts: {enc}"
    );
    assert!(
        enc["summary"]
            .as_str()
            .unwrap()
            .contains("decrypts to a pg_dump archive"),
        "{enc}"
    );
    assert_eq!(
        finding(&incident, "backup_job")["status"],
        "problem",
        "the Job did fail"
    );
    // What kube-rs asked the API server: the Job list by selector, then the newest pod's last 100 lines.
    let reqs = w.kube.requests();
    assert!(reqs.iter().any(|r| r.path
        == format!("/apis/batch/v1/namespaces/{}/jobs", w.kube.namespace())
        && r.query.contains("labelSelector=app%3Dpostgres-backup")));
    assert!(reqs.iter().any(|r| r.path.starts_with(&format!(
        "/api/v1/namespaces/{}/pods/postgres-backup-29002440-",
        w.kube.namespace()
    )) && r.path.ends_with("/log")
        && r.query.contains("tailLines=100")
        && r.status == 200));
    assert!(
        reqs.iter().all(|r| r.method == "GET"),
        "diagnosis changes nothing in the cluster"
    );
}

// ---- Remediation, end to end ----
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediation_creates_the_missing_backup_role_and_a_real_backup_as_it_proves_the_fix() {
    // A role name and the Secret's password as an attacker would pick them.
    let role = format!("bk;x'\"{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _cleanup = DropRole(role.clone());
    let w = World::builder()
        .backup_role_gone(&role)
        .job_failed_with_logs(&format!("{FAILED_DUMP}{ROLE_GONE_LOG}"))
        .policy(LIVE)
        .build()
        .await;
    assert!(!role_exists(&role).await);

    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;
    // The verification Job exists, so the repair is done: the role logs in and the real
    // pg_dump of every configured database succeeds with it.
    assert!(role_exists(&role).await, "the role was created");
    w.run_backup_as(&role, KEY).await;
    w.kube.finish_job(&jobs[0], true);
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;

    assert_eq!(incident["status"], "remediated", "{:?}", states(&incident));
    assert_eq!(incident["diagnosis"]["scenario"], "authentication");
    let repair = step(&incident, "repair_backup_role");
    assert_eq!(repair["state"], "succeeded", "{repair:#}");
    let changes = repair["output"]["changes"].to_string();
    assert!(changes.contains("created role"), "{changes}");
    assert!(changes.contains("granted pg_read_all_data"), "{changes}");
    let verify = step(&incident, "verify_backup");
    assert_eq!(verify["state"], "succeeded", "{verify:#}");
    assert_eq!(
        verify["output"]["objects"].as_array().unwrap().len(),
        2,
        "one new backup per database"
    );
    assert_eq!(step(&incident, "escalate")["state"], "skipped");
    assert!(
        role_exists("postgres").await,
        "the quoted name ran no SQL of its own"
    );
    assert!(
        !incident.to_string().contains(&w.pg.password),
        "the Secret's password is nowhere in the record"
    );

    // A second repair with the same inputs changes nothing.
    let password = secrecy::SecretString::from(w.pg.password.clone());
    let dbs = w.pg.dbs[..2].to_vec();
    let again = backup_remediator::actions::repair_role::repair(
        &backup_remediator::actions::repair_role::RoleSpec {
            admin_url: &pg::admin_url(),
            role: &role,
            password: &password,
            databases: &dbs,
            read_access: "auto",
        },
    )
    .await
    .unwrap();
    assert_eq!(again["changed"], false, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_with_schema_grants_lets_pg_dump_read_every_table_and_is_idempotent() {
    let pg = pg::Scratch::create(&["shop"]).await;
    let role = format!(
        "bk_grants_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let _cleanup = DropRole(role.clone());
    let db = &pg.dbs[0];
    pg.sql(
        db,
        "CREATE SCHEMA sales; CREATE TABLE public.items (id serial PRIMARY KEY, name text); \
         CREATE TABLE sales.orders (id bigserial PRIMARY KEY, item int); \
         INSERT INTO public.items (name) VALUES ('a'), ('b')",
    )
    .await;
    pg.sql(
        "postgres",
        &format!("REVOKE CONNECT ON DATABASE {db} FROM PUBLIC"),
    )
    .await;
    let password = secrecy::SecretString::from("pw'; DROP ROLE postgres; --".to_owned());
    let dbs = vec![db.clone()];
    let spec = backup_remediator::actions::repair_role::RoleSpec {
        admin_url: &pg::admin_url(),
        role: &role,
        password: &password,
        databases: &dbs,
        read_access: "schema_grants",
    };
    let first = backup_remediator::actions::repair_role::repair(&spec)
        .await
        .unwrap();
    let changes = first["changes"].to_string();
    for expected in [
        "created role",
        "granted CONNECT",
        "USAGE on schema sales",
        "SELECT on 2 relations in schema public",
        "default SELECT",
    ] {
        assert!(changes.contains(expected), "{expected}: {changes}");
    }
    let dir = tempfile::tempdir().unwrap();
    let dumped = backup::dump_as(dir.path(), &role, db, KEY);
    assert!(!dumped.is_empty());
    let second = backup_remediator::actions::repair_role::repair(&spec)
        .await
        .unwrap();
    assert_eq!(second["changed"], false, "{second}");
    assert!(role_exists("postgres").await);
    pg.sql("postgres", "GRANT CONNECT ON DATABASE postgres TO PUBLIC")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_policy_file_remediation_is_a_dry_run_that_changes_nothing() {
    let role = format!("bk_dry_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _cleanup = DropRole(role.clone());
    let w = World::builder()
        .backup_role_gone(&role)
        .job_failed_with_logs(&format!("{FAILED_DUMP}{ROLE_GONE_LOG}"))
        .build()
        .await;
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;

    assert_eq!(incident["status"], "escalated");
    for (name, state) in states(&incident) {
        let want = if name == "escalate" {
            "succeeded"
        } else {
            "dry_run"
        };
        assert_eq!(state, want, "{name}");
    }
    assert!(
        w.kube.writes().is_empty(),
        "nothing was written to the cluster: {:?}",
        w.kube.writes()
    );
    assert!(
        !role_exists(&role).await,
        "nothing was changed in the database"
    );
    let kinds = timeline_kinds(&incident);
    let planned = kinds.iter().position(|k| k == "planned").unwrap();
    assert!(planned > kinds.iter().position(|k| k == "diagnosed").unwrap());
    assert!(
        kinds[planned..].contains(&"step_dry_run".to_owned()),
        "{kinds:?}"
    );
    let escalated = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "escalated")
        .unwrap();
    let rpo = &escalated["detail"]["rpo"];
    assert_eq!(
        rpo["rpo_breached"], true,
        "the last success was 30 h ago: {rpo}"
    );
    assert!(
        rpo["rpo_impact"]
            .as_str()
            .unwrap()
            .starts_with("last successful backup 30 h"),
        "{rpo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remediation_expands_the_full_volume_once_and_the_cooldown_refuses_a_second_expansion() {
    let w = World::builder()
        .volume_full()
        .job_failed_with_logs(&format!("{FAILED_DUMP}{DISK_FULL_LOG}"))
        .policy(LIVE)
        .build()
        .await;
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;

    let patched = patches(&w, &format!("/persistentvolumeclaims/{PVC}"));
    assert_eq!(patched.len(), 1);
    assert_eq!(patched[0].content_type, "application/merge-patch+json");
    assert_eq!(patched[0].status, 200, "the API server applied it");
    assert_eq!(
        patched[0].body,
        Some(json!({"spec": {"resources": {"requests": {"storage": "150Gi"}}}}))
    );
    let job = w.kube.get("Job", &jobs[0]).await.unwrap();
    let cronjob = w.kube.get("CronJob", "postgres-backup").await.unwrap();
    assert_eq!(
        job["spec"]["template"]["spec"],
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    );
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");

    w.run_backup_as(&w.pg.role, KEY).await;
    w.kube.finish_job(&jobs[0], true);
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(incident["status"], "remediated", "{:?}", states(&incident));
    assert_eq!(step(&incident, "expand_pvc")["output"]["to"], "150Gi");
    assert_eq!(step(&incident, "delete_old_files")["state"], "skipped");

    // The same volume alerts again: the cooldown refuses a second expansion, deleting files is
    // never allowed, and the incident goes to people.
    let again = w.alert(&w.base, T2).await;
    let second = w
        .wait_for(again, "an outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(second["status"], "escalated", "{:?}", states(&second));
    let expand = step(&second, "expand_pvc");
    assert_eq!(expand["state"], "refused");
    assert!(
        expand["reason"].as_str().unwrap().contains("cooldown"),
        "{expand}"
    );
    let delete = step(&second, "delete_old_files");
    assert_eq!(delete["state"], "refused");
    assert!(
        delete["reason"].as_str().unwrap().contains("never"),
        "{delete}"
    );
    assert_eq!(
        patches(
            &w,
            "/persistentvolumeclaims/postgres-data-postgres-primary-0"
        )
        .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_primary_waits_for_an_approval_and_a_rejection_escalates() {
    let w = World::builder()
        .database_down()
        .job_failed_with_logs(&format!(
            "{FAILED_DUMP}pg_dump: error: connection to server failed: Connection refused\n"
        ))
        .policy(LIVE)
        .build()
        .await;
    let (id, restart) = w.restart_waiting_for_approval().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        patches(&w, "/statefulsets/postgres-primary").is_empty(),
        "nothing runs unapproved"
    );
    assert_eq!(w.incident(id).await["status"], "open");

    assert_eq!(
        w.approve(id, restart, "approve", API).await.status(),
        401,
        "the read token cannot approve"
    );
    let resp = w.approve(id, restart, "reject", ADMIN).await;
    assert_eq!(resp.status(), 200);
    let decided: Value = resp.json().await.unwrap();
    assert_eq!(decided["state"], "rejected");
    assert_eq!(
        decided["decided_by"], "admin",
        "the admin token's name, not X-Actor"
    );
    assert_eq!(
        w.approve(id, restart, "approve", ADMIN).await.status(),
        409,
        "decided once"
    );

    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(incident["status"], "escalated", "{:?}", states(&incident));
    assert!(patches(&w, "/statefulsets/postgres-primary").is_empty());
    assert!(timeline_kinds(&incident).contains(&"rejected".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_restart_patches_the_statefulset_as_kubectl_rollout_restart_does() {
    let w = World::builder()
        .database_down()
        .job_failed_with_logs(&format!(
            "{FAILED_DUMP}pg_dump: error: connection to server failed: Connection refused\n"
        ))
        .policy(LIVE)
        .build()
        .await;
    let (id, restart) = w.restart_waiting_for_approval().await;
    assert_eq!(w.approve(id, restart, "approve", ADMIN).await.status(), 200);

    // The database still refuses after the restart: the check fails and people take over.
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(incident["status"], "escalated", "{:?}", states(&incident));
    let s = step(&incident, "restart_primary");
    assert_eq!(s["state"], "succeeded", "{s:#}");
    assert_eq!(s["decided_by"], "admin");
    let patched = patches(&w, "/statefulsets/postgres-primary");
    assert_eq!(patched.len(), 1);
    assert_eq!(patched[0].content_type, "application/merge-patch+json");
    assert_eq!(patched[0].status, 200, "the API server applied it");
    let at = &patched[0].body.as_ref().unwrap()["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"];
    assert!(at.as_str().is_some_and(|t| t.ends_with('Z')), "{at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_approved_from_slack_goes_through_the_gate_and_patches_the_statefulset() {
    // Arrange: the service with Slack approvals on, the restart waiting for a person.
    const SECRET: &str = "scenario-signing-secret-77d1";
    let slack =
        format!("[notify]\nslack_signing_secret = \"{SECRET}\"\nslack_approvers = [\"U123ABC\"]\n");
    let w = World::builder()
        .database_down()
        .job_failed_with_logs(&format!(
            "{FAILED_DUMP}pg_dump: error: connection to server failed: Connection refused\n"
        ))
        .policy(LIVE)
        .remediation(&slack)
        .build()
        .await;
    let (id, restart) = w.restart_waiting_for_approval().await;

    // Act: U123ABC clicks Approve; Slack signs the request.
    let body = approvals::click("U123ABC", "approve_step", id, restart, "");
    let now = chrono::Utc::now().timestamp();
    let resp = w
        .client
        .post(format!("{}/slack/interactions", w.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now.to_string())
        .header(
            "x-slack-signature",
            approvals::slack_signature(SECRET, now, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap();

    // Assert: the parked plan woke, the gate let the approved restart through, and the decider
    // is the Slack user.
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert!(
        answer["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved `restart_primary`"),
        "{answer}"
    );
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;
    let s = step(&incident, "restart_primary");
    assert_eq!(s["state"], "succeeded", "{s:#}");
    assert_eq!(s["decided_by"], "slack:U123ABC (alice)");
    assert_eq!(patches(&w, "/statefulsets/postgres-primary").len(), 1);
    assert!(timeline_kinds(&incident).contains(&"approved".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_without_a_new_backup_or_with_another_key_does_not_remediate() {
    let w = World::builder().job_failed_with_logs(&format!("{FAILED_DUMP}pg_dump: error: could not receive data from server: Connection reset by peer\n")).policy(LIVE).build()
    .await;
    // The Job reports success but uploads nothing.
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;
    w.kube.finish_job(&jobs[0], true);
    let first = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(first["status"], "escalated");
    let verify = step(&first, "verify_backup");
    assert_eq!(verify["state"], "failed");
    assert!(
        verify["reason"].as_str().unwrap().contains("no new object"),
        "{verify}"
    );

    // Next time it uploads a backup encrypted with another key.
    let again = w.alert(&w.base, T2).await;
    let jobs = w.wait_for_jobs(2).await;
    let job = jobs
        .iter()
        .find(|j| !j.ends_with(&format!("-{id}-{}", verify["id"])))
        .unwrap();
    w.run_backup_as(&w.pg.role, "a-different-key-0123456789abcdef-xyz")
        .await;
    w.kube.finish_job(job, true);
    let second = w
        .wait_for(again, "an outcome", |i| i["status"] != "open")
        .await;
    assert_eq!(second["status"], "escalated");
    let verify = step(&second, "verify_backup");
    assert!(
        verify["reason"]
            .as_str()
            .unwrap()
            .contains("does not decrypt"),
        "{verify}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_in_the_middle_of_a_step_resumes_without_repeating_a_finished_action() {
    let mut w = World::builder()
        .volume_full()
        .job_failed_with_logs(&format!("{FAILED_DUMP}{DISK_FULL_LOG}"))
        .policy(LIVE)
        .processes(1)
        .remediation("lease_seconds = 3")
        .build()
        .await;
    let id = w.alert(&w.base.clone(), "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;
    // The PVC is expanded and the verification Job is being watched: kill the process.
    let mut first = w.processes.remove(0);
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    assert_eq!(
        patches(&w, &format!("/persistentvolumeclaims/{PVC}")).len(),
        1
    );

    w.base = w.start_process().await;
    let resumed = w
        .wait_for(id, "the resumed step", |i| {
            timeline_kinds(i).contains(&"step_resumed".to_owned())
        })
        .await;
    assert_eq!(step(&resumed, "expand_pvc")["state"], "succeeded");
    w.run_backup_as(&w.pg.role, KEY).await;
    w.kube.finish_job(&jobs[0], true);
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;

    assert_eq!(incident["status"], "remediated", "{:?}", states(&incident));
    assert_eq!(
        patches(&w, &format!("/persistentvolumeclaims/{PVC}")).len(),
        1,
        "expanded once"
    );
    let created: std::collections::BTreeSet<String> = w.kube.created_jobs().into_iter().collect();
    assert_eq!(
        created.len(),
        1,
        "the resumed step adopted the Job it had started: {created:?}"
    );
    assert_eq!(
        timeline_kinds(&incident)
            .iter()
            .filter(|k| *k == "step_started")
            .count(),
        2,
        "expand and verify started once each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_service_processes_on_one_database_remediate_an_alert_once() {
    let w = World::builder()
        .volume_full()
        .job_failed_with_logs(&format!("{FAILED_DUMP}{DISK_FULL_LOG}"))
        .policy(LIVE)
        .processes(2)
        .build()
        .await;
    // Alertmanager HA: both replicas get the same notification.
    let (a, b) = tokio::join!(
        w.alert(&w.bases[0], "2026-11-24T02:30:00Z"),
        w.alert(&w.bases[1], "2026-11-24T02:30:00Z")
    );
    assert_eq!(a, b, "one incident");
    let jobs = w.wait_for_jobs(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.run_backup_as(&w.pg.role, KEY).await;
    w.kube.finish_job(&jobs[0], true);
    let incident = w.wait_for(a, "an outcome", |i| i["status"] != "open").await;

    assert_eq!(incident["status"], "remediated", "{:?}", states(&incident));
    assert_eq!(
        patches(&w, &format!("/persistentvolumeclaims/{PVC}")).len(),
        1
    );
    assert_eq!(
        w.kube.created_jobs().len(),
        1,
        "one backup Job, created once"
    );
    let kinds = timeline_kinds(&incident);
    assert_eq!(kinds.iter().filter(|k| *k == "planned").count(), 1);
    assert_eq!(
        kinds.iter().filter(|k| *k == "probes_started").count(),
        1,
        "diagnosed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_alert_lets_the_running_step_finish_and_skips_the_rest() {
    let w = World::builder().job_failed_with_logs(&format!("{FAILED_DUMP}pg_dump: error: could not receive data from server: Connection reset by peer\n")).policy(LIVE).build()
    .await;
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;
    // Alertmanager reports the alert resolved while the verification Job runs.
    let resolved = json!({
        "receiver": "backup-remediator", "status": "resolved", "version": "4", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "externalURL": "http://alertmanager:9093",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "alerts": [{"status": "resolved",
            "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": w.kube.namespace()},
            "annotations": {}, "startsAt": "2026-11-24T02:30:00Z", "endsAt": "2026-11-24T03:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "5c0e2a1b9d8f7e61"}]
    });
    let resp = w
        .client
        .post(format!("{}/webhook/alertmanager", w.base))
        .bearer_auth(HOOK)
        .json(&resolved)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        step(&w.incident(id).await, "verify_backup")["state"],
        "running"
    );
    w.kube.finish_job(&jobs[0], false);
    let incident = w
        .wait_for(id, "the plan to end", |i| {
            i["actions"].as_array().unwrap().iter().all(|s| {
                !["planned", "running", "waiting_approval", "approved"]
                    .contains(&s["state"].as_str().unwrap())
            })
        })
        .await;
    assert_eq!(incident["status"], "resolved");
    assert_eq!(
        step(&incident, "verify_backup")["state"],
        "failed",
        "the running step finished"
    );
    let escalate = step(&incident, "escalate");
    assert_eq!(escalate["state"], "skipped");
    assert!(
        escalate["reason"]
            .as_str()
            .unwrap()
            .contains("Alertmanager resolved the alert"),
        "{escalate}"
    );
}
