//! Remediation actions one at a time, against real parts: the role repair on a PostgreSQL that
//! checks passwords (scram-sha-256), and the PVC expansion's limits against the stand-in
//! Kubernetes API (what it refuses, it never patches).

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::actions::preconditions::{self, Precondition};
use backup_remediator::actions::repair_role::{repair, RoleSpec};
use backup_remediator::actions::{expand_pvc, verify, ActionContext};
use backup_remediator::config::Settings;
use backup_remediator::domain::plan::{Decision, Step, StepKind, StepState};
use backup_remediator::domain::policy::Policy;
use backup_remediator::probes::ProbeContext;
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};

use crate::support::kube_server;
use crate::support::pg;
use kube_server::{fixtures as fx, KubeServer};

#[tokio::test]
async fn a_drifted_password_is_reset_to_the_secrets_and_then_logs_in() {
    let server = pg::PasswordServer::start("admin-canary-pw");
    let admin = format!(
        "postgres://postgres:admin-canary-pw@127.0.0.1:{}/postgres",
        server.port
    );
    let mut c = PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql("CREATE ROLE backup_user LOGIN PASSWORD 'old-password'")
        .execute(&mut c)
        .await
        .unwrap();
    let secret = SecretString::from("new-secret-password".to_owned());
    let dbs = vec!["postgres".to_owned()];
    let spec = RoleSpec {
        admin_url: &admin,
        role: "backup_user",
        password: &secret,
        databases: &dbs,
        read_access: "auto",
    };
    let user_url = |pw: &str| {
        format!(
            "postgres://backup_user:{pw}@127.0.0.1:{}/postgres",
            server.port
        )
    };
    assert!(
        PgConnection::connect(&user_url("new-secret-password"))
            .await
            .is_err(),
        "drifted"
    );

    let out = repair(&spec).await.unwrap();

    let changes = out["changes"].to_string();
    assert!(
        changes.contains("reset the password of backup_user"),
        "{changes}"
    );
    assert!(
        !out.to_string().contains("new-secret-password"),
        "the password is not in the output"
    );
    PgConnection::connect(&user_url("new-secret-password"))
        .await
        .expect("the Secret's password logs in now");
    // The server logs every statement: the reset is there, the password is not (only its
    // SCRAM verifier was sent).
    let log = server.log();
    assert!(
        log.contains("ALTER ROLE backup_user PASSWORD 'SCRAM-SHA-256$4096:"),
        "{log}"
    );
    assert!(
        !log.contains("new-secret-password"),
        "the cleartext reached the server log"
    );
    let again = repair(&spec).await.unwrap();
    assert_eq!(again["changed"], false, "{again}");
}

#[tokio::test]
async fn the_repair_refuses_to_touch_a_superuser() {
    let server = pg::PasswordServer::start("admin-canary-pw");
    let admin = format!(
        "postgres://postgres:admin-canary-pw@127.0.0.1:{}/postgres",
        server.port
    );
    let mut c = PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql("CREATE ROLE dba SUPERUSER LOGIN PASSWORD 'x'")
        .execute(&mut c)
        .await
        .unwrap();
    let secret = SecretString::from("y".to_owned());
    let dbs = vec!["postgres".to_owned()];
    let err = repair(&RoleSpec {
        admin_url: &admin,
        role: "dba",
        password: &secret,
        databases: &dbs,
        read_access: "auto",
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("SUPERUSER"), "{err}");
}

#[tokio::test]
async fn the_repair_refuses_a_role_with_any_privileged_attribute_or_membership() {
    let server = pg::PasswordServer::start("admin-canary-pw");
    let admin = format!(
        "postgres://postgres:admin-canary-pw@127.0.0.1:{}/postgres",
        server.port
    );
    let mut c = PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(
        "CREATE ROLE r_repl LOGIN REPLICATION PASSWORD 'old'; \
         CREATE ROLE r_createrole LOGIN CREATEROLE PASSWORD 'old'; \
         CREATE ROLE r_createdb LOGIN CREATEDB PASSWORD 'old'; \
         CREATE ROLE r_bypassrls LOGIN BYPASSRLS PASSWORD 'old'; \
         CREATE ROLE admins NOLOGIN CREATEROLE; \
         CREATE ROLE r_member LOGIN PASSWORD 'old' IN ROLE admins; \
         CREATE ROLE r_files LOGIN PASSWORD 'old' IN ROLE pg_write_server_files",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let secret = SecretString::from("what-the-secret-says".to_owned());
    let dbs = vec!["postgres".to_owned()];
    for (role, named) in [
        ("r_repl", "REPLICATION"),
        ("r_createrole", "CREATEROLE"),
        ("r_createdb", "CREATEDB"),
        ("r_bypassrls", "BYPASSRLS"),
        ("r_member", "member of admins"),
        ("r_files", "member of pg_write_server_files"),
    ] {
        let err = repair(&RoleSpec {
            admin_url: &admin,
            role,
            password: &secret,
            databases: &dbs,
            read_access: "auto",
        })
        .await
        .expect_err(role)
        .to_string();
        assert!(err.contains(named), "{role}: {err}");
        let url = format!("postgres://{role}:old@127.0.0.1:{}/postgres", server.port);
        PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{role}'s password was changed: {e}"));
    }
}

#[tokio::test]
async fn a_password_with_hostile_characters_never_appears_in_a_statement() {
    let server = pg::PasswordServer::start("admin-canary-pw");
    let admin = format!(
        "postgres://postgres:admin-canary-pw@127.0.0.1:{}/postgres",
        server.port
    );
    // Quotes, a statement, dollar quoting, a backslash, non-ASCII letters and an emoji.
    let password = "pä'ss\"; DROP ROLE postgres; -- $$\\ Ω🔑 ｆｕｌｌ";
    let secret = SecretString::from(password.to_owned());
    let dbs = vec!["postgres".to_owned()];
    let out = repair(&RoleSpec {
        admin_url: &admin,
        role: "backup_hostile",
        password: &secret,
        databases: &dbs,
        read_access: "auto",
    })
    .await
    .unwrap();
    assert!(out["changes"].to_string().contains("created role"), "{out}");
    let log = server.log();
    for part in ["pä'ss", "DROP ROLE postgres", "Ω🔑", "ｆｕｌｌ"] {
        assert!(!log.contains(part), "{part:?} reached the server log");
    }
    assert!(log.contains("SCRAM-SHA-256$4096:"), "{log}");
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(server.port)
        .username("backup_hostile")
        .password(password)
        .database("postgres");
    PgConnection::connect_with(&opts)
        .await
        .expect("the Secret's password logs in (SASLprep as the server does)");
}

fn ctx(kube: &KubeServer, policy: &str) -> ActionContext {
    ctx_with(kube, policy, "")
}

fn ctx_with(kube: &KubeServer, policy: &str, settings: &str) -> ActionContext {
    let settings = Arc::new(Settings::from_toml(settings).unwrap());
    ActionContext {
        settings: settings.clone(),
        policy: Arc::new(Policy::from_toml(policy).unwrap()),
        kube: Some(kube.client()),
        probes: Arc::new(ProbeContext::new(
            settings,
            Some(kube.client()),
            reqwest::Client::new(),
        )),
        incident_id: 1,
    }
}

const PVC: &str = "postgres-data-postgres-primary-0";

#[tokio::test]
async fn expansion_stays_under_the_ceiling() {
    let kube = KubeServer::start().await;
    kube.put(fx::pvc(PVC, "gp3", "480Gi"));
    kube.put(fx::storage_class("gp3", true));
    let err = expand_pvc::prepare(&ctx(
        &kube,
        "[limits]\npvc_ceiling = \"500Gi\"\npvc_growth_step = \"50Gi\"",
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("would exceed the policy's ceiling of 500Gi"),
        "{err}"
    );

    let ok = expand_pvc::prepare(&ctx(
        &kube,
        "[limits]\npvc_ceiling = \"1Ti\"\npvc_growth_step = \"50Gi\"",
    ))
    .await
    .unwrap();
    assert_eq!(ok["to"], "530Gi");
    assert!(kube.writes().is_empty(), "prepare only reads");
}

#[tokio::test]
async fn a_storage_class_without_expansion_is_refused() {
    let kube = KubeServer::start().await;
    kube.put(fx::pvc(PVC, "standard", "100Gi"));
    kube.put(fx::storage_class("standard", false));
    let err = expand_pvc::prepare(&ctx(&kube, ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not allow volume expansion"), "{err}");
}

#[tokio::test]
async fn applying_the_same_expansion_twice_patches_once() {
    let kube = KubeServer::start().await;
    kube.put(fx::pvc(PVC, "gp3", "100Gi"));
    kube.put(fx::storage_class("gp3", true));
    let c = ctx(&kube, "");
    let intent = expand_pvc::prepare(&c).await.unwrap();
    let first = expand_pvc::apply(&c, &intent).await.unwrap();
    let second = expand_pvc::apply(&c, &intent).await.unwrap();
    assert_eq!(first["patched"], true);
    assert_eq!(second["patched"], false, "{second}");
    let patches: Vec<_> = kube
        .writes()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
}

#[tokio::test]
async fn the_repair_refuses_a_role_that_owns_objects() {
    let server = pg::PasswordServer::start("admin-canary-pw");
    let admin = format!(
        "postgres://postgres:admin-canary-pw@127.0.0.1:{}/postgres",
        server.port
    );
    let mut c = PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(
        "CREATE ROLE app_user LOGIN PASSWORD 'app-password'; \
         CREATE TABLE orders (id int); ALTER TABLE orders OWNER TO app_user",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let secret = SecretString::from("what-the-secret-says".to_owned());
    let dbs = vec!["postgres".to_owned()];
    let err = repair(&RoleSpec {
        admin_url: &admin,
        role: "app_user",
        password: &secret,
        databases: &dbs,
        read_access: "auto",
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("owns 1 objects"), "{err}");
    let url = format!(
        "postgres://app_user:app-password@127.0.0.1:{}/postgres",
        server.port
    );
    PgConnection::connect(&url)
        .await
        .expect("the application's password still works");
}

fn verify_step() -> Step {
    Step {
        id: 2,
        incident_id: 1,
        seq: 2,
        group: 1,
        kind: StepKind::Verify,
        name: "verify_backup".parse().unwrap(),
        target: "cronjob/link-services/postgres-backup".into(),
        decision: Decision::Auto,
        state: StepState::Planned,
        reason: String::new(),
        output: serde_json::json!({}),
        decided_by: None,
        decided_at: None,
        started_at: None,
        finished_at: None,
    }
}

#[tokio::test]
async fn a_verification_waits_while_a_backup_job_runs_and_deletes_its_own_job_at_the_deadline() {
    let kube = KubeServer::start().await;
    kube.put(fx::cronjob("postgres-backup"));
    kube.put(fx::job(
        "postgres-backup-29002440",
        "2026-11-24T02:00:00Z",
        "active",
    ));
    let c = ctx_with(&kube, "", "[remediation]\njob_deadline_seconds = 1");
    let step = verify_step();
    match preconditions::check(&c, &step).await {
        Precondition::Wait(why) => assert!(why.contains("postgres-backup-29002440"), "{why}"),
        other => panic!("a second backup beside a running one: {other:?}"),
    }
    kube.finish_job("postgres-backup-29002440", false);
    assert!(matches!(
        preconditions::check(&c, &step).await,
        Precondition::Holds(_)
    ));

    // The verification's own Job never finishes: at the deadline it is deleted, so the next
    // attempt never runs beside it.
    let intent = verify::prepare(&c, &step);
    let err = verify::apply(&c, &intent).await.unwrap_err().to_string();
    assert!(
        err.contains("still running") && err.contains("deleted it"),
        "{err}"
    );
    let name = intent["job"].as_str().unwrap();
    assert_eq!(kube.created_jobs(), [name]);
    assert_eq!(kube.deleted_jobs(), [name]);
    assert!(kube.active_jobs().is_empty(), "{:?}", kube.active_jobs());
}

/// A manual backup's Job (its own label, not the CronJob's) is a running backup too: a
/// verification waits for it and the primary is not restarted under it.
#[tokio::test]
async fn a_running_manual_backup_job_holds_back_a_verification() {
    let kube = KubeServer::start().await;
    kube.put(fx::cronjob("postgres-backup"));
    let mut manual = fx::job(
        "postgres-manual-backup-20261207-2301",
        "2026-12-07T23:01:00Z",
        "active",
    );
    manual["metadata"]["labels"] = serde_json::json!({"app": "postgres-manual-backup",
        "app.kubernetes.io/managed-by": "backup-remediator", "backup-remediator/backup": "4"});
    kube.put(manual);
    let c = ctx_with(&kube, "", "");

    let checked = preconditions::check(&c, &verify_step()).await;

    match checked {
        Precondition::Wait(why) => {
            assert!(
                why.contains("postgres-manual-backup-20261207-2301"),
                "{why}"
            )
        }
        other => panic!("a verification beside a running manual backup: {other:?}"),
    }
}

/// The garbage collector takes 1.5 s to remove a deleted Job's pods: a verification Job that
/// timed out is deleted with foreground propagation and the step ends only once the Job and its
/// pods are gone, so the next backup Job never runs beside its pod.
#[tokio::test]
async fn a_timed_out_verification_job_and_its_pod_are_gone_before_the_step_ends() {
    let kube = KubeServer::start().await;
    kube.put(fx::cronjob("postgres-backup"));
    kube.pods_linger_on_delete(Duration::from_millis(1500));
    let c = ctx_with(&kube, "", "[remediation]\njob_deadline_seconds = 1");
    let step = verify_step();
    let intent = verify::prepare(&c, &step);
    let name = intent["job"].as_str().unwrap().to_owned();
    // The Job's pod, running the dump.
    kube.put(fx::job_pod(
        &format!("{name}-x7k2p"),
        &name,
        "2026-11-24T02:00:00Z",
        "ok",
    ));

    let err = verify::apply(&c, &intent).await.unwrap_err().to_string();

    assert!(err.contains("still running"), "{err}");
    assert!(
        kube.pods_of(&name).is_empty(),
        "the step ended while the Job's pod still ran: {err}"
    );
    assert!(kube.get("Job", &name).is_none(), "the Job is gone: {err}");
    let delete = kube
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(
        delete.body.unwrap()["propagationPolicy"],
        "Foreground",
        "the Job goes only after its pods"
    );
}

#[tokio::test]
async fn the_primary_is_not_restarted_while_a_backup_job_runs() {
    let kube = KubeServer::start().await;
    kube.put(fx::job(
        "postgres-backup-29002440",
        "2026-11-24T02:00:00Z",
        "active",
    ));
    // Nothing listens on the target port: the database does not answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ctx_with(
        &kube,
        "",
        &format!("[target]\nhost = \"127.0.0.1\"\nport = {port}\nconnect_timeout_ms = 500"),
    );
    let mut step = verify_step();
    step.kind = StepKind::Action;
    step.name = "restart_primary".parse().unwrap();
    match preconditions::check(&c, &step).await {
        Precondition::Refuse(why) => {
            assert!(why.contains("postgres-backup-29002440 is running"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
