//! The probes that talk to Prometheus and PostgreSQL, against the real servers: Prometheus from
//! Debian's package scraping series the test serves, and the local PostgreSQL with a backup role
//! the test creates and breaks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::domain::finding::{ConnectFailure, ProbeOutput, Signal, Status};
use backup_remediator::probes::backup_metrics::BackupMetrics;
use backup_remediator::probes::database::Database;
use backup_remediator::probes::{BackupSecret, Probe, ProbeContext};
use k8s_openapi::ByteString;
use sqlx::Connection;

use crate::support::pg;
use crate::support::procs;

fn ctx(settings: Settings, secret: Option<BackupSecret>) -> Arc<ProbeContext> {
    backup_remediator::install_crypto_provider();
    let c = ProbeContext::new(Arc::new(settings), None, reqwest::Client::new());
    Arc::new(match secret {
        Some(s) => c.with_secret(Ok(s)),
        None => c,
    })
}

async fn run(probe: &dyn Probe, ctx: Arc<ProbeContext>) -> ProbeOutput {
    tokio::time::timeout(Duration::from_secs(20), probe.run(ctx))
        .await
        .expect("probe answers")
}

// ---------- backup_metrics, against the real Prometheus ----------

async fn metrics_case(
    body: impl Fn() -> String + Clone + Send + Sync + 'static,
    wait_for: Option<&str>,
) -> ProbeOutput {
    let dir = tempfile::tempdir().unwrap();
    let exporter = procs::exporter(body).await;
    let (_prom, url) = procs::prometheus(dir.path(), &[exporter.to_string()], None, None).await;
    procs::wait_for_series(&url, "up").await;
    if let Some(q) = wait_for {
        procs::wait_for_series(&url, q).await;
    }
    let settings = Settings::from_toml(&format!("[prometheus]\nurl = \"{url}\"")).unwrap();
    run(&BackupMetrics, ctx(settings, None)).await
}

#[tokio::test]
async fn metrics_of_a_healthy_backup_are_ok_with_the_age_of_the_last_success() {
    let last = chrono::Utc::now().timestamp() - 3 * 3600;
    let out = metrics_case(
        move || {
            format!(
                "postgres_backup_last_success_timestamp {last}\npostgres_backup_errors_total 0\n"
            )
        },
        Some("postgres_backup_last_success_timestamp"),
    )
    .await;
    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    assert!(
        out.summary.starts_with("Last successful backup 3 h"),
        "{}",
        out.summary
    );
    assert!(out.evidence["age_seconds"].as_i64().unwrap() >= 3 * 3600);
}

#[tokio::test]
async fn a_stale_success_and_growing_errors_are_reported() {
    let last = chrono::Utc::now().timestamp() - 30 * 3600;
    let errors = Arc::new(AtomicU64::new(0));
    let out = metrics_case(
        move || {
            // Every scrape sees one more error, so increase() over the window is positive.
            let n = errors.fetch_add(1, Ordering::Relaxed);
            format!(
                "postgres_backup_last_success_timestamp {last}\npostgres_backup_errors_total {n}\n"
            )
        },
        Some("increase(postgres_backup_errors_total[24h]) > 0"),
    )
    .await;
    assert_eq!(out.status, Status::Problem);
    assert!(
        matches!(out.signals[0], Signal::LastSuccessStale { age_seconds } if age_seconds >= 30 * 3600)
    );
    assert!(
        matches!(out.signals[1], Signal::BackupErrors { increase } if increase > 0.0),
        "{:?}",
        out.signals
    );
}

#[tokio::test]
async fn no_series_means_the_backup_job_never_reported() {
    let out = metrics_case(|| "# nothing about backups here\n".to_owned(), None).await;
    assert_eq!(out.status, Status::Problem);
    assert_eq!(out.signals, vec![Signal::BackupNeverReported]);
    assert!(out.summary.contains("never reported"));
}

#[tokio::test]
async fn an_unreachable_prometheus_is_an_error_finding() {
    let port = procs::free_port();
    let settings =
        Settings::from_toml(&format!("[prometheus]\nurl = \"http://127.0.0.1:{port}\"")).unwrap();
    let out = run(&BackupMetrics, ctx(settings, None)).await;
    assert_eq!(out.status, Status::Error);
    assert!(out.summary.contains("unreachable"), "{}", out.summary);
}

#[tokio::test]
async fn a_prometheus_password_in_its_url_never_reaches_the_finding() {
    let port = procs::free_port();
    let settings = Settings::from_toml(&format!(
        "[prometheus]\nurl = \"http://scrape:prom-canary-pw@127.0.0.1:{port}\""
    ))
    .unwrap();
    let out = run(&BackupMetrics, ctx(settings, None)).await;
    assert_eq!(out.status, Status::Error);
    let shown = format!("{} {}", out.summary, out.evidence);
    assert!(!shown.contains("prom-canary-pw"), "{shown}");
    assert!(shown.contains("127.0.0.1"), "still says where: {shown}");
}

// ---------- database, against the real PostgreSQL ----------

/// Two databases (each with a table and a sequence) and a backup role of the test's own.
struct Fixture(pg::Scratch);

impl std::ops::Deref for Fixture {
    type Target = pg::Scratch;
    fn deref(&self) -> &pg::Scratch {
        &self.0
    }
}

impl Fixture {
    async fn new() -> Self {
        let s = pg::Scratch::create(&["link_users", "link_chat"]).await;
        for db in &s.dbs {
            s.sql(
                db,
                "CREATE TABLE users (id int primary key, email text); CREATE SEQUENCE invoice_seq",
            )
            .await;
        }
        Fixture(s)
    }

    fn secret(&self, user: &str) -> BackupSecret {
        pg::backup_secret(user, &self.password)
    }

    fn settings(&self, port: u16) -> Settings {
        let dbs = self
            .dbs
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(", ");
        Settings::from_toml(&format!(
            "[target]\nhost = \"127.0.0.1\"\nport = {port}\ndatabases = [{dbs}]\nconnect_timeout_ms = 1500"
        ))
        .unwrap()
    }

    async fn probe(&self, user: &str) -> ProbeOutput {
        run(&Database, ctx(self.settings(5432), Some(self.secret(user)))).await
    }
}

#[tokio::test]
async fn a_backup_role_with_pg_read_all_data_logs_in_everywhere_and_reads_everything() {
    let f = Fixture::new().await;
    f.sql("postgres", &format!("GRANT pg_read_all_data TO {}", f.role))
        .await;

    let out = f.probe(&f.role).await;

    assert_eq!(out.status, Status::Ok, "{}", out.summary);
    assert!(
        out.summary.contains("all 2 databases") && out.summary.contains("pg_read_all_data"),
        "{}",
        out.summary
    );
    assert!(
        !out.evidence.to_string().contains("canary-pw"),
        "the password never reaches evidence"
    );
}

#[tokio::test]
async fn a_missing_role_is_named() {
    let f = Fixture::new().await;
    let out = f.probe("no_such_backup_role").await;
    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![Signal::RoleMissing {
            role: "no_such_backup_role".into()
        }]
    );
    assert!(
        out.summary.contains("role does not exist"),
        "{}",
        out.summary
    );
}

#[tokio::test]
async fn a_role_without_connect_on_a_database_is_named_with_that_database() {
    let f = Fixture::new().await;
    f.sql(
        "postgres",
        &format!("REVOKE CONNECT ON DATABASE {} FROM PUBLIC", f.dbs[1]),
    )
    .await;
    f.sql("postgres", &format!("GRANT pg_read_all_data TO {}", f.role))
        .await;

    let out = f.probe(&f.role).await;

    assert_eq!(
        out.signals,
        vec![Signal::NoConnectPrivilege {
            database: f.dbs[1].clone()
        }]
    );
}

#[tokio::test]
async fn a_role_that_cannot_read_a_table_lists_what_pg_dump_would_fail_on() {
    let f = Fixture::new().await;
    // Readable on the first database, nothing granted on the second.
    f.sql(&f.dbs[0], &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r}; GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}", r = f.role)).await;

    let out = f.probe(&f.role).await;

    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![Signal::NoReadAccess {
            database: f.dbs[1].clone(),
            tables: vec!["public.invoice_seq".into(), "public.users".into()]
        }]
    );
    assert!(
        out.summary.contains("cannot read 2 relation(s)"),
        "{}",
        out.summary
    );
}

#[tokio::test]
async fn a_refused_connection_is_told_apart_from_a_timeout() {
    let f = Fixture::new().await;
    let closed = procs::free_port();
    let out = run(&Database, ctx(f.settings(closed), Some(f.secret(&f.role)))).await;
    assert!(
        matches!(
            &out.signals[..],
            [Signal::DatabaseUnreachable {
                failure: ConnectFailure::Refused,
                ..
            }]
        ),
        "{:?}",
        out.signals
    );
    assert!(out.summary.contains("refused"), "{}", out.summary);

    // Something accepts TCP but never speaks PostgreSQL: the login times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let out = run(&Database, ctx(f.settings(port), Some(f.secret(&f.role)))).await;
    hold.abort();
    assert!(
        matches!(
            &out.signals[..],
            [Signal::DatabaseUnreachable {
                failure: ConnectFailure::Timeout,
                ..
            }]
        ),
        "{:?}",
        out.signals
    );
}

#[tokio::test]
async fn without_backup_credentials_the_database_probe_says_so_and_skips_the_login() {
    let f = Fixture::new().await;
    let out = run(&Database, ctx(f.settings(5432), None)).await;
    assert_eq!(out.status, Status::Skipped);
    assert!(
        out.summary.contains("no backup credentials"),
        "{}",
        out.summary
    );
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_failure_and_the_right_one_logs_in() {
    // The shared server trusts every local login; this one checks passwords.
    let server = pg::PasswordServer::start("superuser-canary-pw");
    let admin = format!(
        "postgres://postgres:superuser-canary-pw@127.0.0.1:{}/postgres",
        server.port
    );
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .expect("superuser logs in with its password");
    sqlx::Executor::execute(&mut c, "CREATE ROLE backup_user LOGIN PASSWORD 'right-canary-pw'; GRANT pg_read_all_data TO backup_user")
        .await
        .unwrap();
    let settings = Settings::from_toml(&format!(
        "[target]\nhost = \"127.0.0.1\"\nport = {}\ndatabases = [\"postgres\"]\nconnect_timeout_ms = 3000",
        server.port
    ))
    .unwrap();
    let secret = |password: &str| {
        let data: BTreeMap<String, ByteString> = [
            ("postgres-user", "backup_user"),
            ("postgres-password", password),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
        BackupSecret::from_data(&data)
    };

    let wrong = run(
        &Database,
        ctx(settings.clone(), Some(secret("drifted-canary-pw"))),
    )
    .await;
    let right = run(&Database, ctx(settings, Some(secret("right-canary-pw")))).await;

    assert_eq!(
        wrong.signals,
        vec![Signal::AuthenticationFailed {
            role: "backup_user".into()
        }]
    );
    assert!(
        wrong.summary.contains("authentication failed"),
        "{}",
        wrong.summary
    );
    assert_eq!(right.status, Status::Ok, "{}", right.summary);
    let shown = format!(
        "{} {} {} {}",
        wrong.summary, wrong.evidence, right.summary, right.evidence
    );
    assert!(
        !shown.contains("canary"),
        "no password reaches a finding: {shown}"
    );
}
