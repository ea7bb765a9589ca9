//! Remediation actions one at a time, against real parts: the role repair on a PostgreSQL that
//! checks passwords (scram-sha-256); the PVC expansion's limits and the verification's Jobs
//! against the test cluster's real API server, as the service's ServiceAccount (what it
//! refuses, it never patches).

use std::sync::Arc;

use backup_remediator::actions::preconditions::{self, Precondition};
use backup_remediator::actions::repair_role::{repair, RoleSpec};
use backup_remediator::actions::{expand_pvc, verify, ActionContext};
use backup_remediator::config::Settings;
use backup_remediator::domain::plan::{Decision, Step, StepKind, StepState};
use backup_remediator::domain::policy::Policy;
use backup_remediator::probes::ProbeContext;
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};

use crate::support::cluster::{self, fixtures as fx, TestNamespace};
use crate::support::pg;

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

async fn ctx(ns: &TestNamespace, policy: &str) -> ActionContext {
    ctx_with(ns, policy, "").await
}

/// The service's action context in `ns`, as its ServiceAccount: `settings` (TOML) after the
/// `[kubernetes]` section pointing there.
async fn ctx_with(ns: &TestNamespace, policy: &str, settings: &str) -> ActionContext {
    let toml = format!("[kubernetes]\n{}\n{settings}", ns.kubernetes_toml());
    let settings = Arc::new(Settings::from_toml(&toml).unwrap());
    let client = ns.as_service().await;
    ActionContext {
        settings: settings.clone(),
        policy: Arc::new(Policy::from_toml(policy).unwrap()),
        kube: Some(client.clone()),
        probes: Arc::new(ProbeContext::new(
            settings,
            Some(client),
            reqwest::Client::new(),
        )),
        incident_id: 1,
    }
}

const PVC: &str = "postgres-data-postgres-primary-0";

/// A namespace with the primary's claim of `size`, bound, in a StorageClass of its own that
/// allows expansion or not.
async fn claim(size: &str, expandable: bool) -> TestNamespace {
    let ns = cluster::shared().await.namespace().await;
    let class = format!("{}-class", ns.name);
    ns.put(fx::storage_class(&class, expandable)).await;
    ns.put(fx::pvc(PVC, &class, size, true)).await;
    ns
}

/// The requests the service's ServiceAccount made in `ns` that change something.
fn writes(ns: &TestNamespace) -> Vec<(String, String, String, u16)> {
    ns.cluster
        .service_requests(&ns.name)
        .into_iter()
        .filter(|(verb, ..)| !matches!(verb.as_str(), "get" | "list" | "watch"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expansion_stays_under_the_ceiling() {
    let ns = claim("480Gi", true).await;
    let err = expand_pvc::prepare(
        &ctx(
            &ns,
            "[limits]\npvc_ceiling = \"500Gi\"\npvc_growth_step = \"50Gi\"",
        )
        .await,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("would exceed the policy's ceiling of 500Gi"),
        "{err}"
    );

    let ok = expand_pvc::prepare(
        &ctx(
            &ns,
            "[limits]\npvc_ceiling = \"1Ti\"\npvc_growth_step = \"50Gi\"",
        )
        .await,
    )
    .await
    .unwrap();
    assert_eq!(ok["to"], "530Gi");
    assert!(writes(&ns).is_empty(), "prepare only reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_class_without_expansion_is_refused() {
    let ns = claim("100Gi", false).await;
    let err = expand_pvc::prepare(&ctx(&ns, "").await)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not allow volume expansion"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_same_expansion_twice_patches_once() {
    let ns = claim("100Gi", true).await;
    for obj in expand_pvc_grant(&ns) {
        ns.put(obj).await;
    }
    let c = ctx(&ns, "").await;
    let intent = expand_pvc::prepare(&c).await.unwrap();
    let first = expand_pvc::apply(&c, &intent).await.unwrap();
    let second = expand_pvc::apply(&c, &intent).await.unwrap();
    assert_eq!(first["patched"], true);
    assert_eq!(second["patched"], false, "{second}");
    let patches: Vec<_> = writes(&ns)
        .into_iter()
        .filter(|(verb, resource, ..)| verb == "patch" && resource == "persistentvolumeclaims")
        .collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].3, 200);
}

/// The class was changed after the plan was made (or the claim was never dynamically
/// provisioned): the API server refuses the patch (403 from its PersistentVolumeClaimResize
/// admission). The step says so in a sentence, and the claim is as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expansion_the_api_server_refuses_is_reported_with_its_reason() {
    let ns = claim("100Gi", true).await;
    for obj in expand_pvc_grant(&ns) {
        ns.put(obj).await;
    }
    let c = ctx(&ns, "").await;
    let intent = expand_pvc::prepare(&c).await.unwrap();
    ns.put(fx::storage_class(&format!("{}-class", ns.name), false))
        .await;

    let err = expand_pvc::apply(&c, &intent)
        .await
        .unwrap_err()
        .to_string();

    assert_eq!(
        err,
        format!(
            "the API server refused to expand PVC {PVC} (403 Forbidden): only dynamically \
             provisioned pvc can be resized and the storageclass that provisions the pvc must \
             support resize"
        )
    );
    let claim: serde_json::Value = ns
        .get(&format!(
            "/api/v1/namespaces/{}/persistentvolumeclaims/{PVC}",
            ns.name
        ))
        .await;
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "100Gi");
}

/// A claim that is not bound cannot be resized at all: the API server answers 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_claim_is_not_expanded_and_the_step_says_why() {
    let ns = cluster::shared().await.namespace().await;
    let class = format!("{}-class", ns.name);
    ns.put(fx::storage_class(&class, true)).await;
    ns.put(fx::pvc(PVC, &class, "100Gi", false)).await;
    for obj in expand_pvc_grant(&ns) {
        ns.put(obj).await;
    }
    let c = ctx(&ns, "").await;
    let intent = expand_pvc::prepare(&c).await.unwrap();

    let err = expand_pvc::apply(&c, &intent)
        .await
        .unwrap_err()
        .to_string();

    assert!(
        err.starts_with(&format!(
            "the API server refused to expand PVC {PVC} (422 Invalid): "
        )) && err.contains("spec is immutable after creation except resources.requests"),
        "{err}"
    );
}

/// deploy/components/expand-pvc's Role and RoleBinding for `ns`: the patch the expansion needs.
fn expand_pvc_grant(ns: &TestNamespace) -> Vec<serde_json::Value> {
    let mut objects = cluster::render("deploy/components/expand-pvc").unwrap();
    for o in &mut objects {
        o["metadata"]["namespace"] = serde_json::json!(ns.name);
    }
    objects
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_waits_while_a_backup_job_runs_and_deletes_its_own_job_at_the_deadline() {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[])).await;
    ns.put(fx::cronjob(&ns.held())).await;
    ns.put(fx::job("postgres-backup-29002440", &ns.held()))
        .await;
    ns.wait_active("postgres-backup-29002440").await;
    let c = ctx_with(&ns, "", "[remediation]\njob_deadline_seconds = 2").await;
    let step = verify_step();
    match preconditions::check(&c, &step).await {
        Precondition::Wait(why) => assert!(why.contains("postgres-backup-29002440"), "{why}"),
        other => panic!("a second backup beside a running one: {other:?}"),
    }
    ns.release("postgres-backup-29002440", false);
    ns.wait_job("postgres-backup-29002440", "Failed").await;
    assert!(matches!(
        preconditions::check(&c, &step).await,
        Precondition::Holds(_)
    ));

    // The verification's own Job never finishes: at the deadline it is deleted with its pod
    // (the garbage collector and the node agent really remove them), so the next attempt never
    // runs beside it.
    let intent = verify::prepare(&c, &step);
    let err = verify::apply(&c, &intent).await.unwrap_err().to_string();
    assert!(
        err.contains("still running") && err.contains("deleted it"),
        "{err}"
    );
    let name = intent["job"].as_str().unwrap();
    let jobs: Vec<String> = ns
        .jobs()
        .await
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    assert_eq!(
        jobs,
        ["postgres-backup-29002440"],
        "the verification's Job is gone"
    );
    assert!(ns.pods_of(name).await.is_empty(), "its pod is gone too");
    let deletes: Vec<_> = writes(&ns)
        .into_iter()
        .filter(|(verb, ..)| verb == "delete")
        .collect();
    assert_eq!(
        deletes,
        [("delete".into(), "jobs".into(), name.into(), 200)]
    );
}

/// A manual backup's Job (its own label, not the CronJob's) is a running backup too: a
/// verification waits for it and the primary is not restarted under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_manual_backup_job_holds_back_a_verification() {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[])).await;
    ns.put(fx::cronjob(&ns.held())).await;
    let mut manual = fx::job("postgres-manual-backup-20261207-2301", &ns.held());
    manual["metadata"]["labels"] = serde_json::json!({"app": "postgres-manual-backup",
        "app.kubernetes.io/managed-by": "backup-remediator", "backup-remediator/backup": "4"});
    ns.put(manual).await;
    let c = ctx(&ns, "").await;

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
    ns.release("postgres-manual-backup-20261207-2301", true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_is_not_restarted_while_a_backup_job_runs() {
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(&[])).await;
    ns.put(fx::job("postgres-backup-29002440", &ns.held()))
        .await;
    // Nothing listens on the target port: the database does not answer.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = ctx_with(
        &ns,
        "",
        &format!("[target]\nhost = \"127.0.0.1\"\nport = {port}\nconnect_timeout_ms = 500"),
    )
    .await;
    let mut step = verify_step();
    step.kind = StepKind::Action;
    step.name = "restart_primary".parse().unwrap();
    match preconditions::check(&c, &step).await {
        Precondition::Refuse(why) => {
            assert!(why.contains("postgres-backup-29002440 is running"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    ns.release("postgres-backup-29002440", true);
}
