//! `database`: the runbook's "Verify Database Health" and "Test authentication", with the backup
//! user's own credentials from the Secret — is the primary reachable (refused, timeout and DNS
//! failure told apart, like pg_isready), can the user log in, does the role exist, has it CONNECT
//! on every configured database, and can it read every table and sequence pg_dump must read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Row};

use super::{ConnectFailure, Probe, ProbeContext, ProbeOutput, Signal};

pub struct Database;

/// How one database answered the backup user.
#[derive(Debug, Clone, Serialize)]
struct DbResult {
    database: String,
    /// `ok`, or why the login failed.
    login: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    superuser: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pg_read_all_data: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unreadable: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable_count: Option<i64>,
    #[serde(skip)]
    signal: Option<Signal>,
}

/// Objects pg_dump reads that the current role may not: tables, partitioned tables, materialized
/// views and sequences outside the system schemas, in schemas it cannot use or without SELECT.
const UNREADABLE: &str = r"
    SELECT format('%I.%I', n.nspname, c.relname) AS name, count(*) OVER () AS total
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm', 'S')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
      AND (NOT has_schema_privilege(n.oid, 'USAGE') OR NOT has_table_privilege(c.oid, 'SELECT'))
    ORDER BY 1 LIMIT 20";

const ROLE: &str = r"
    SELECT r.rolsuper AS superuser,
           COALESCE((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles
                     WHERE rolname = 'pg_read_all_data'), false) AS read_all
    FROM pg_roles r WHERE r.rolname = current_user";

/// Classifies a failed TCP connect the way pg_isready's "no response" would be read.
fn connect_failure(e: &std::io::Error) -> ConnectFailure {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => ConnectFailure::Refused,
        K::TimedOut => ConnectFailure::Timeout,
        K::HostUnreachable | K::NetworkUnreachable => ConnectFailure::Unreachable,
        _ => ConnectFailure::Other,
    }
}

/// TCP reachability of host:port within `timeout`.
async fn reach(host: &str, port: u16, timeout: Duration) -> Result<(), (ConnectFailure, String)> {
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => {
            return Err((
                ConnectFailure::Timeout,
                format!("resolving {host} timed out"),
            ))
        }
        Ok(Err(e)) => {
            return Err((
                ConnectFailure::Dns,
                format!("could not resolve {host}: {e}"),
            ))
        }
        Ok(Ok(a)) => a.collect::<Vec<_>>(),
    };
    let Some(addr) = addrs.first() else {
        return Err((
            ConnectFailure::Dns,
            format!("{host} resolves to no address"),
        ));
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Err(_) => Err((
            ConnectFailure::Timeout,
            format!("no answer from {addr} within {} ms", timeout.as_millis()),
        )),
        Ok(Err(e)) => Err((connect_failure(&e), format!("{addr}: {e}"))),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Maps a login error to the runbook's words and a signal.
fn login_failure(e: &sqlx::Error, role: &str, database: &str) -> (String, Signal) {
    if let sqlx::Error::Database(db) = e {
        let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
        let msg = db.message().to_owned();
        return match code.as_str() {
            "28P01" => (
                format!("authentication failed: {msg}"),
                Signal::AuthenticationFailed {
                    role: role.to_owned(),
                },
            ),
            "28000" if msg.contains("does not exist") => (
                format!("role does not exist: {msg}"),
                Signal::RoleMissing {
                    role: role.to_owned(),
                },
            ),
            "28000" => (
                format!("login refused: {msg}"),
                Signal::AuthenticationFailed {
                    role: role.to_owned(),
                },
            ),
            "3D000" => (
                format!("database does not exist: {msg}"),
                Signal::DatabaseMissing {
                    database: database.to_owned(),
                },
            ),
            "42501" => (
                format!("no CONNECT privilege: {msg}"),
                Signal::NoConnectPrivilege {
                    database: database.to_owned(),
                },
            ),
            // Any other answer (53300 too many connections, 57P03 starting up or in
            // recovery…) comes from a server that is up.
            _ => (
                format!("the server refused the login ({code}): {msg}"),
                Signal::DatabaseConnectionFailed {
                    database: database.to_owned(),
                    code: Some(code),
                    detail: msg,
                },
            ),
        };
    }
    let detail = crate::infra::prometheus::root_cause(e);
    let failure = match e {
        sqlx::Error::Io(io) => connect_failure(io),
        _ => ConnectFailure::Other,
    };
    (
        format!("connection failed: {detail}"),
        Signal::DatabaseUnreachable { failure, detail },
    )
}

async fn check_database(
    opts: PgConnectOptions,
    role: String,
    database: String,
    timeout: Duration,
) -> DbResult {
    let mut r = DbResult {
        database: database.clone(),
        login: "ok".into(),
        superuser: None,
        pg_read_all_data: None,
        unreadable: Vec::new(),
        unreadable_count: None,
        signal: None,
    };
    let opts = opts.database(&database);
    let mut conn = match tokio::time::timeout(timeout, opts.connect()).await {
        Err(_) => {
            let detail = format!("login did not complete within {} ms", timeout.as_millis());
            r.login = detail.clone();
            r.signal = Some(Signal::DatabaseUnreachable {
                failure: ConnectFailure::Timeout,
                detail,
            });
            return r;
        }
        Ok(Err(e)) => {
            let (words, signal) = login_failure(&e, &role, &database);
            r.login = words;
            r.signal = Some(signal);
            return r;
        }
        Ok(Ok(c)) => c,
    };
    let checks = async {
        let row = sqlx::query(ROLE).fetch_one(&mut conn).await?;
        let superuser: bool = row.try_get("superuser")?;
        let read_all: bool = row.try_get("read_all")?;
        let rows = if superuser || read_all {
            Vec::new()
        } else {
            sqlx::query(UNREADABLE).fetch_all(&mut conn).await?
        };
        Ok::<_, sqlx::Error>((superuser, read_all, rows))
    };
    match tokio::time::timeout(timeout, checks).await {
        Ok(Ok((superuser, read_all, rows))) => {
            r.superuser = Some(superuser);
            r.pg_read_all_data = Some(read_all);
            r.unreadable = rows
                .iter()
                .filter_map(|row| row.try_get::<String, _>("name").ok())
                .collect();
            r.unreadable_count = Some(
                rows.first()
                    .and_then(|row| row.try_get::<i64, _>("total").ok())
                    .unwrap_or(0),
            );
            if !r.unreadable.is_empty() {
                r.signal = Some(Signal::NoReadAccess {
                    database: database.clone(),
                    tables: r.unreadable.clone(),
                });
            }
        }
        Ok(Err(e)) => r.login = format!("logged in, but checking privileges failed: {e}"),
        Err(_) => r.login = "logged in, but checking privileges timed out".into(),
    }
    let _ = conn.close().await;
    r
}

/// How the probes connect to the primary as the backup job does (its user and password).
pub(super) fn job_options(
    t: &crate::config::TargetSettings,
    user: &str,
    password: &str,
) -> PgConnectOptions {
    PgConnectOptions::new()
        .host(&t.host)
        .port(t.port)
        .username(user)
        .password(password)
        .ssl_mode(PgSslMode::Prefer)
        .application_name("backup-remediator-probe")
        .disable_statement_logging()
}

impl Probe for Database {
    fn name(&self) -> &'static str {
        "database"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let t = &ctx.settings.target;
            let timeout = Duration::from_millis(t.connect_timeout_ms);
            let mut evidence =
                serde_json::json!({ "host": t.host, "port": t.port, "databases": t.databases });

            if let Err((failure, detail)) = reach(&t.host, t.port, timeout).await {
                evidence["reachable"] = serde_json::json!(false);
                evidence["failure"] = serde_json::to_value(failure).unwrap_or_default();
                evidence["detail"] = serde_json::json!(detail);
                let what = match failure {
                    ConnectFailure::Refused => "refused the connection",
                    ConnectFailure::Timeout => "did not answer (timeout)",
                    ConnectFailure::Dns => "cannot be resolved (DNS)",
                    ConnectFailure::Unreachable => "is unreachable (no route to host)",
                    ConnectFailure::Other => "could not be reached",
                };
                return ProbeOutput::problem(
                    format!("PostgreSQL primary {}:{} {what}", t.host, t.port),
                    vec![Signal::DatabaseUnreachable { failure, detail }],
                )
                .with_evidence(evidence);
            }
            evidence["reachable"] = serde_json::json!(true);

            let secret = match ctx.backup_secret().await {
                Ok(s) => s,
                Err(e) => {
                    return ProbeOutput::skipped(format!(
                        "Primary reachable; no backup credentials to log in with: {e}"
                    ))
                    .with_evidence(evidence)
                }
            };
            let (Some(user), Some(password)) = (&secret.postgres_user, &secret.postgres_password)
            else {
                return ProbeOutput::skipped(
                    "Primary reachable; the Secret lacks postgres-user or postgres-password",
                )
                .with_evidence(evidence);
            };
            let opts = job_options(t, user, password.expose_secret());
            let results = join_all(
                t.databases
                    .iter()
                    .map(|db| check_database(opts.clone(), user.clone(), db.clone(), timeout)),
            )
            .await;
            evidence["role"] = serde_json::json!(user);
            evidence["results"] = serde_json::to_value(&results).unwrap_or_default();

            let mut signals: Vec<Signal> = Vec::new();
            for s in only_down_when_all_are(&results) {
                // One role problem is the same on every database: report it once.
                if !signals.contains(&s) {
                    signals.push(s);
                }
            }
            if signals.is_empty() {
                let how = if results.iter().any(|r| r.pg_read_all_data == Some(true)) {
                    "(pg_read_all_data)"
                } else if results.iter().any(|r| r.superuser == Some(true)) {
                    "(superuser)"
                } else {
                    "(SELECT on every table and sequence)"
                };
                return ProbeOutput::ok(format!(
                    "Backup user {user} logs in to all {} databases and can read them {how}",
                    results.len()
                ))
                .with_evidence(evidence);
            }
            let failed: Vec<String> = results
                .iter()
                .filter(|r| r.signal.is_some())
                .map(|r| format!("{}: {}", r.database, describe(r)))
                .collect();
            ProbeOutput::problem(
                format!("Backup user {user}: {}", failed.join("; ")),
                signals,
            )
            .with_evidence(evidence)
        })
    }
}

/// The databases' signals, with "the primary is down" kept only when every database's
/// connection failed without an answer: one database that timed out while another answered
/// says nothing about the primary, so it becomes a failed connection to that database.
fn only_down_when_all_are(results: &[DbResult]) -> Vec<Signal> {
    let down = |r: &DbResult| r.signal.as_ref().is_some_and(Signal::means_primary_down);
    let all_down = !results.is_empty() && results.iter().all(down);
    results
        .iter()
        .filter_map(|r| match &r.signal {
            Some(Signal::DatabaseUnreachable { failure, detail })
                if failure.is_no_answer() && !all_down =>
            {
                Some(Signal::DatabaseConnectionFailed {
                    database: r.database.clone(),
                    code: None,
                    detail: detail.clone(),
                })
            }
            other => other.clone(),
        })
        .collect()
}

fn describe(r: &DbResult) -> String {
    match &r.signal {
        Some(Signal::NoReadAccess { tables, .. }) => {
            let n = r.unreadable_count.unwrap_or(tables.len() as i64);
            format!(
                "cannot read {n} relation(s), e.g. {}",
                tables
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        _ => r.login.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(database: &str, signal: Option<Signal>) -> DbResult {
        DbResult {
            database: database.into(),
            login: String::new(),
            superuser: None,
            pg_read_all_data: None,
            unreadable: Vec::new(),
            unreadable_count: None,
            signal,
        }
    }

    fn timeout() -> Option<Signal> {
        Some(Signal::DatabaseUnreachable {
            failure: ConnectFailure::Timeout,
            detail: "login did not complete within 1500 ms".into(),
        })
    }

    #[test]
    fn a_timeout_on_one_database_while_another_answers_is_not_the_primary_down() {
        let signals = only_down_when_all_are(&[result("app", timeout()), result("chat", None)]);
        assert!(
            !signals.iter().any(Signal::means_primary_down),
            "{signals:?}"
        );
        assert_eq!(
            signals,
            vec![Signal::DatabaseConnectionFailed {
                database: "app".into(),
                code: None,
                detail: "login did not complete within 1500 ms".into()
            }]
        );
    }

    #[test]
    fn every_database_timing_out_is_the_primary_down() {
        let signals =
            only_down_when_all_are(&[result("app", timeout()), result("chat", timeout())]);
        assert!(
            signals.iter().any(Signal::means_primary_down),
            "{signals:?}"
        );
    }

    #[test]
    fn an_answer_from_the_server_on_one_database_means_up_even_if_the_others_time_out() {
        let answered = Some(Signal::DatabaseConnectionFailed {
            database: "chat".into(),
            code: Some("53300".into()),
            detail: "too many connections for role \"backup\"".into(),
        });
        let signals = only_down_when_all_are(&[result("app", timeout()), result("chat", answered)]);
        assert!(
            !signals.iter().any(Signal::means_primary_down),
            "{signals:?}"
        );
    }
}
