//! `repair_backup_role`: the runbook's scenario 2 fix, made idempotent. With the admin
//! connection from config: create the backup role named in the Secret if it is missing (LOGIN,
//! the Secret's password), reset its password if the Secret's no longer logs in, grant CONNECT on
//! each configured database and read access (`pg_read_all_data` where the server has it, else
//! USAGE and SELECT on every schema's tables and sequences plus default privileges). Only what is
//! missing is granted, so a second run changes nothing.
//!
//! Names never enter SQL text by pasting: the server's own `format()` with `%I` (identifier) and
//! `%L` (literal) builds each statement from bound parameters. The password is not sent at all:
//! the statement carries its SCRAM-SHA-256 verifier, computed here, so a server that logs DDL
//! (`log_statement = 'ddl'`, common for audits) never writes the cleartext to its log.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

use super::{ActionContext, ActionError};

/// The role to repair and how.
pub struct RoleSpec<'a> {
    pub admin_url: &'a str,
    pub role: &'a str,
    pub password: &'a SecretString,
    pub databases: &'a [String],
    /// `auto` or `schema_grants`.
    pub read_access: &'a str,
}

pub async fn apply(ctx: &ActionContext) -> Result<Value, ActionError> {
    let admin = ctx.settings.remediation.admin_database_url.expose_secret();
    if admin.is_empty() {
        return Err("no admin connection is configured (remediation.admin_database_url)".into());
    }
    let secret = ctx.probes.backup_secret().await?;
    let role = secret
        .postgres_user
        .clone()
        .ok_or("the backup Secret has no postgres-user")?;
    let password = secret
        .postgres_password
        .clone()
        .ok_or("the backup Secret has no postgres-password")?;
    repair(&RoleSpec {
        admin_url: admin,
        role: &role,
        password: &password,
        databases: &ctx.settings.target.databases,
        read_access: &ctx.settings.remediation.read_access,
    })
    .await
}

fn opts(url: &str) -> Result<PgConnectOptions, ActionError> {
    url.parse::<PgConnectOptions>()
        .map(|o| {
            o.application_name("backup-remediator")
                .log_statements(tracing::log::LevelFilter::Off)
        })
        .map_err(|_| "remediation.admin_database_url is not a PostgreSQL URL".into())
}

/// One connection, as a pool of one: sqlx's `&PgPool` executor keeps these futures `Send` in
/// the spawned engine task (a `&mut PgConnection` executor does not).
async fn connect(o: &PgConnectOptions, what: &str) -> Result<PgPool, ActionError> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(o.clone())
        .await
        .map_err(|e| format!("connecting to {what}: {}", scrub(&e.to_string())).into())
}

/// Server messages may quote a statement; statements here can hold the password.
fn scrub(text: &str) -> String {
    match text.find("PASSWORD") {
        Some(i) => format!("{}PASSWORD [redacted]", &text[..i]),
        None => text.to_owned(),
    }
}

/// Runs `format(template, args…)` on the server and executes the statement it returns.
async fn run(conn: &PgPool, template: &str, args: &[&str]) -> Result<(), ActionError> {
    let placeholders: Vec<String> = (1..=args.len()).map(|i| format!("${i}::text")).collect();
    let sql = format!("SELECT format('{template}', {})", placeholders.join(", "));
    let mut q = sqlx::query_scalar::<_, String>(&sql);
    for a in args {
        q = q.bind(*a);
    }
    let statement = q
        .fetch_one(conn)
        .await
        .map_err(|e| format!("quoting a statement: {}", scrub(&e.to_string())))?;
    sqlx::raw_sql(&statement).execute(conn).await.map_err(|e| {
        let shown = template.split(" PASSWORD").next().unwrap_or(template);
        format!("{shown}: {}", scrub(&e.to_string()))
    })?;
    Ok(())
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677, the format of
/// `pg_authid.rolpassword`), with a fresh salt. PostgreSQL takes a value in this form as the
/// already-encrypted password, so the password itself never appears in a statement, whatever
/// characters it has. Like PostgreSQL (`pg_saslprep`), the password is normalised with SASLprep
/// first, and used as it is when SASLprep refuses it.
pub fn scram_verifier(password: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    const ITERATIONS: u32 = 4096;
    let prepared =
        stringprep::saslprep(password).map_or_else(|_| password.to_owned(), |p| p.into_owned());
    let salt: [u8; 16] = rand::random();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(prepared.as_bytes(), &salt, ITERATIONS, &mut salted);
    let mac = |message: &[u8]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&salted).expect("HMAC takes any key");
        m.update(message);
        m.finalize().into_bytes()
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let stored_key = Sha256::digest(mac(b"Client Key"));
    let server_key = mac(b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64(&salt),
        b64(&stored_key),
        b64(&server_key)
    )
}

/// The role's login attribute, its privileged attributes, and the privileged roles it is a
/// member of (directly or not): a backup role needs none of them, and changing the password of
/// a role that has them would hand the Secret's holder that power.
const PRIVILEGES: &str = "SELECT r.rolcanlogin, \
    array_remove(ARRAY[CASE WHEN r.rolsuper THEN 'SUPERUSER' END, \
        CASE WHEN r.rolreplication THEN 'REPLICATION' END, \
        CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END, \
        CASE WHEN r.rolcreatedb THEN 'CREATEDB' END, \
        CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END], NULL)::text[] AS attributes, \
    ARRAY(SELECT p.rolname::text FROM pg_roles p WHERE p.oid <> r.oid \
        AND pg_has_role(r.oid, p.oid, 'MEMBER') \
        AND (p.rolsuper OR p.rolreplication OR p.rolcreaterole OR p.rolcreatedb OR p.rolbypassrls \
             OR p.rolname IN ('pg_execute_server_program', 'pg_write_server_files', \
                              'pg_read_server_files', 'pg_write_all_data')) \
        ORDER BY 1) AS memberships \
    FROM pg_roles r WHERE r.rolname = $1";

/// Whether `role` can log in with `password` to `database` on the admin URL's server.
async fn logs_in(
    admin: &PgConnectOptions,
    role: &str,
    password: &SecretString,
    database: &str,
) -> Result<bool, ActionError> {
    let o = admin
        .clone()
        .username(role)
        .password(password.expose_secret())
        .database(database);
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(&o)).await {
        Err(_) => Err("logging in as the backup role timed out".into()),
        Ok(Ok(c)) => {
            let _ = c.close().await;
            Ok(true)
        }
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("28P01") => Ok(false),
        Ok(Err(e)) => {
            Err(format!("logging in as the backup role: {}", scrub(&e.to_string())).into())
        }
    }
}

/// Makes the role exist, log in, and read every configured database. Returns what changed.
pub async fn repair(spec: &RoleSpec<'_>) -> Result<Value, ActionError> {
    let admin = opts(spec.admin_url)?;
    let conn = connect(&admin, "the primary as admin").await?;
    let role = spec.role;
    let me: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&conn)
        .await
        .map_err(|e| e.to_string())?;
    if me == role {
        return Err(format!(
            "the backup role {role:?} is the admin connection's own role; it is not changed"
        )
        .into());
    }
    let mut changes: Vec<String> = Vec::new();
    let existing = sqlx::query(PRIVILEGES)
        .bind(role)
        .fetch_optional(&conn)
        .await
        .map_err(|e| e.to_string())?;
    let verifier = scram_verifier(spec.password.expose_secret());
    let pw = verifier.as_str();
    match existing {
        None => {
            run(&conn, "CREATE ROLE %I LOGIN PASSWORD %L", &[role, pw]).await?;
            changes.push(format!("created role {role} with the Secret's password"));
        }
        Some(row) => {
            let can_login: bool = row.try_get("rolcanlogin").map_err(|e| e.to_string())?;
            let attributes: Vec<String> = row.try_get("attributes").map_err(|e| e.to_string())?;
            let memberships: Vec<String> = row.try_get("memberships").map_err(|e| e.to_string())?;
            if !attributes.is_empty() || !memberships.is_empty() {
                let mut what = attributes.join(", ");
                if !memberships.is_empty() {
                    if !what.is_empty() {
                        what.push_str("; ");
                    }
                    what.push_str(&format!("member of {}", memberships.join(", ")));
                }
                return Err(format!(
                    "the backup role {role:?} is privileged ({what}); the service changes only \
                     an unprivileged backup role"
                )
                .into());
            }
            // A dedicated backup role owns nothing. One that owns databases, tables or other
            // objects is some application's role named in the Secret by mistake: resetting its
            // password would lock that application out.
            let owned: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_shdepend WHERE deptype = 'o' \
                 AND refclassid = 'pg_authid'::regclass \
                 AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)",
            )
            .bind(role)
            .fetch_one(&conn)
            .await
            .map_err(|e| e.to_string())?;
            if owned > 0 {
                return Err(format!(
                    "role {role:?} owns {owned} objects, so it is not a dedicated backup role; \
                     the service does not change it"
                )
                .into());
            }
            if !can_login {
                run(&conn, "ALTER ROLE %I LOGIN", &[role]).await?;
                changes.push(format!("allowed role {role} to log in"));
            }
            let first = spec.databases.first().map_or("postgres", String::as_str);
            if !logs_in(&admin, role, spec.password, first).await? {
                run(&conn, "ALTER ROLE %I PASSWORD %L", &[role, pw]).await?;
                changes.push(format!("reset the password of {role} to the Secret's"));
            }
        }
    }

    for db in spec.databases {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(db)
                .fetch_one(&conn)
                .await
                .map_err(|e| e.to_string())?;
        if !exists {
            return Err(format!(
                "database {db} does not exist; the service does not create databases"
            )
            .into());
        }
        let can: bool = sqlx::query_scalar("SELECT has_database_privilege($1, $2, 'CONNECT')")
            .bind(role)
            .bind(db)
            .fetch_one(&conn)
            .await
            .map_err(|e| e.to_string())?;
        if !can {
            run(&conn, "GRANT CONNECT ON DATABASE %I TO %I", &[db, role]).await?;
            changes.push(format!("granted CONNECT on database {db}"));
        }
    }

    let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&conn)
        .await
        .map_err(|e| e.to_string())?;
    let read_all = spec.read_access == "auto" && version >= 140_000;
    if read_all {
        let member: bool =
            sqlx::query_scalar("SELECT pg_has_role($1, 'pg_read_all_data', 'MEMBER')")
                .bind(role)
                .fetch_one(&conn)
                .await
                .map_err(|e| e.to_string())?;
        if !member {
            run(&conn, "GRANT pg_read_all_data TO %I", &[role]).await?;
            changes.push("granted pg_read_all_data".to_owned());
        }
    } else {
        for db in spec.databases {
            let c = connect(
                &admin.clone().database(db),
                &format!("database {db} as admin"),
            )
            .await?;
            let granted = schema_grants(&c, role, db).await;
            c.close().await;
            changes.extend(granted?);
        }
    }
    conn.close().await;
    Ok(json!({
        "role": role,
        "read_access": if read_all { "pg_read_all_data" } else { "schema_grants" },
        "changes": changes,
        "changed": !changes.is_empty(),
    }))
}

/// USAGE on each user schema, SELECT on its tables and sequences, and default privileges for
/// tables created later by the admin role — each only where missing.
async fn schema_grants(c: &PgPool, role: &str, db: &str) -> Result<Vec<String>, ActionError> {
    let mut changes = Vec::new();
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
         AND nspname <> 'information_schema' ORDER BY 1",
    )
    .fetch_all(c)
    .await
    .map_err(|e| e.to_string())?;
    for schema in &schemas {
        let usage: bool = sqlx::query_scalar("SELECT has_schema_privilege($1, $2, 'USAGE')")
            .bind(role)
            .bind(schema)
            .fetch_one(c)
            .await
            .map_err(|e| e.to_string())?;
        if !usage {
            run(c, "GRANT USAGE ON SCHEMA %I TO %I", &[schema, role]).await?;
            changes.push(format!("{db}: granted USAGE on schema {schema}"));
        }
        let missing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace \
             WHERE n.nspname = $2 AND k.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
             AND NOT has_table_privilege($1, k.oid, 'SELECT')",
        )
        .bind(role)
        .bind(schema)
        .fetch_one(c)
        .await
        .map_err(|e| e.to_string())?;
        if missing > 0 {
            run(
                c,
                "GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I",
                &[schema, role],
            )
            .await?;
            run(
                c,
                "GRANT SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I",
                &[schema, role],
            )
            .await?;
            changes.push(format!(
                "{db}: granted SELECT on {missing} relations in schema {schema}"
            ));
        }
        let defaulted: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, \
             aclexplode(d.defaclacl) a WHERE n.nspname = $2 AND d.defaclobjtype = 'r' \
             AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
             AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND a.privilege_type = 'SELECT')",
        )
        .bind(role)
        .bind(schema)
        .fetch_one(c)
        .await
        .map_err(|e| e.to_string())?;
        if !defaulted {
            run(
                c,
                "ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO %I",
                &[schema, role],
            )
            .await?;
            changes.push(format!(
                "{db}: default SELECT on new tables in schema {schema}"
            ));
        }
    }
    Ok(changes)
}
