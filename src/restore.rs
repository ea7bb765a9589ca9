//! The runbook's restore test ("Test Backup Restoration", "weekly restore tests"): the newest
//! backup of each configured database is downloaded from S3 as a stream, decrypted in process by
//! [`crate::crypto::Decryptor`] (the one implementation of the openssl format), piped into the
//! real `pg_restore` restoring into a scratch database created for the test, checked against
//! what the archive's table of contents (`pg_restore --list`) announces, and the scratch database
//! is dropped — always: on success, failure, timeout and panic ([`ScratchDb`]).
//!
//! A test ends `passed`, `failed` (the backup is not restorable: no backup, corrupt, wrong key,
//! truncated, pg_restore failed, tables missing) or `error` (the test itself could not run:
//! scratch server, S3 or the Secret unreachable, download interrupted). A failed test opens an
//! incident of its own kind, [`NOT_RESTORABLE_ALERT`]. Memory stays flat whatever the backup's
//! size: one read buffer, the decryptor's few blocks, and pipes with back-pressure.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::config::Settings;
use crate::crypto::{CryptoError, Decryptor};
use crate::incident::NewIncident;
use crate::probes::encryption::PG_DUMP_MAGIC;
use crate::probes::s3::{job_s3, list_backups_since};
use crate::probes::ProbeContext;
use crate::store::{Store, StoreError};

mod checks;
mod drift;
pub use checks::{CheckResult, RtoResult};

/// The alertname of the incident a failed restore test opens.
pub const NOT_RESTORABLE_ALERT: &str = "PostgreSQLBackupNotRestorable";

/// Bytes read from the download at a time.
const READ_BUFFER: usize = 256 * 1024;
/// pg_restore's stderr kept for the reason (its last bytes).
const STDERR_KEEP: usize = 16 * 1024;
/// Largest `pg_restore --list` output read (a TOC of a few hundred thousand entries).
const TOC_LIMIT: usize = 64 * 1024 * 1024;

/// Where a restore test stands or how it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    #[default]
    Running,
    /// Restored, and every announced table is there with its data.
    Passed,
    /// The backup is not restorable (an incident is opened).
    Failed,
    /// The test could not be carried out (nothing is said about the backup).
    Error,
}

impl TestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        [Self::Running, Self::Passed, Self::Failed, Self::Error]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown restore test status {s:?}"))
    }
}

/// One database's restore test, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RestoreTest {
    pub id: i64,
    pub database: String,
    /// `api`, `cli` or `schedule`.
    pub trigger: String,
    /// Who asked (the X-Actor of an API call, the OS user of the CLI, `schedule`).
    pub actor: String,
    pub started_at: DateTime<Utc>,
    /// The scratch database used (dropped afterwards; `detail.scratch_dropped` says so).
    pub scratch_database: String,
    /// The `PostgreSQLBackupNotRestorable` incident a failure opened.
    pub incident_id: Option<i64>,
    #[serde(flatten)]
    pub result: TestResult,
}

/// A restore test about to start.
#[derive(Debug, Clone)]
pub struct NewRestoreTest {
    pub database: String,
    pub object_key: Option<String>,
    pub trigger: String,
    pub actor: String,
    /// The schedule period it belongs to (`schedule:<n>`): one test per database and period
    /// across replicas. `None` for tests on demand.
    pub slot: Option<String>,
    pub scratch_database: String,
    pub started_at: DateTime<Utc>,
}

/// Where a restore test got to: what it restored, found and concluded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct TestResult {
    pub status: TestStatus,
    /// Why it failed or could not run, in a sentence.
    pub reason: Option<String>,
    /// The S3 key restored (absent until found).
    pub object_key: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// Size of the encrypted object downloaded.
    pub object_bytes: Option<i64>,
    /// Size of the pg_dump archive after decryption.
    pub archive_bytes: Option<i64>,
    /// TABLE entries `pg_restore --list` announced.
    pub tables_expected: Option<i64>,
    /// Of those, the tables found in the scratch database after the restore.
    pub tables_restored: Option<i64>,
    /// TABLE DATA entries announced.
    pub table_data_expected: Option<i64>,
    /// Rows counted in the restored tables.
    pub rows_restored: Option<i64>,
    /// `restore_test.checks` of the database, run on the restored data.
    pub checks: Vec<CheckResult>,
    /// The restore phase against `restore_test.rto_minutes` (when one is set).
    pub rto: Option<RtoResult>,
    /// Timings, per-table row counts, pg_restore's messages.
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// Why a pipeline step did not succeed: whether the backup is at fault, and the words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// True: the backup is not restorable (`failed`); false: the test could not run (`error`).
    pub backup_at_fault: bool,
    pub reason: String,
}

impl Problem {
    fn backup(reason: impl Into<String>) -> Self {
        Self {
            backup_at_fault: true,
            reason: reason.into(),
        }
    }
    fn test(reason: impl Into<String>) -> Self {
        Self {
            backup_at_fault: false,
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scratch PostgreSQL

/// The server scratch databases are made on, from `restore_test.target_url`.
#[derive(Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<SecretString>,
    /// The database to connect to for CREATE / DROP DATABASE.
    pub maintenance_db: String,
    pub sslmode: Option<String>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("maintenance_db", &self.maintenance_db)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses `postgres://user:password@host:port/db?sslmode=…`. The error never shows the URL.
    pub fn parse(url: &SecretString) -> Result<Self, String> {
        let u = reqwest::Url::parse(url.expose_secret())
            .map_err(|e| format!("restore_test.target_url is not a URL: {e}"))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err("restore_test.target_url must start with postgres://".to_owned());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let db = decode(u.path().trim_start_matches('/'));
        Ok(Self {
            host: u.host_str().unwrap_or("localhost").to_owned(),
            port: u.port().unwrap_or(5432),
            user: if u.username().is_empty() {
                "postgres".to_owned()
            } else {
                decode(u.username())
            },
            password: u.password().map(|p| SecretString::from(decode(p))),
            maintenance_db: if db.is_empty() {
                "postgres".to_owned()
            } else {
                db
            },
            sslmode: u
                .query_pairs()
                .find(|(k, _)| k == "sslmode")
                .map(|(_, v)| v.into_owned()),
        })
    }

    /// Connection options for database `db` on this server.
    pub fn options(&self, db: &str) -> PgConnectOptions {
        let mut o = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(db)
            .application_name("backup-remediator-restore-test")
            .log_statements(tracing::log::LevelFilter::Debug);
        if let Some(p) = &self.password {
            o = o.password(p.expose_secret());
        }
        if let Some(mode) = self
            .sslmode
            .as_deref()
            .and_then(|m| m.parse::<PgSslMode>().ok())
        {
            o = o.ssl_mode(mode);
        }
        o
    }

    /// The libpq environment for a `pg_restore` into `db` (the password never on a command line).
    fn apply_env(&self, cmd: &mut Command, db: &str) {
        for var in ["PGSERVICE", "PGSERVICEFILE", "PGPASSFILE", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", db)
            .env("PGAPPNAME", "backup-remediator-restore-test")
            .env("PGCONNECT_TIMEOUT", "15");
        match &self.password {
            Some(p) => cmd.env("PGPASSWORD", p.expose_secret()),
            None => cmd.env_remove("PGPASSWORD"),
        };
        if let Some(mode) = &self.sslmode {
            cmd.env("PGSSLMODE", mode);
        }
    }
}

/// A PostgreSQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A scratch database name: `<prefix>_<database, reduced to [a-z0-9_]>_<8 hex>`, at most 63 bytes.
pub fn scratch_name(prefix: &str, database: &str) -> String {
    let mut db: String = database
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        })
        .collect();
    db.truncate(63 - prefix.len() - 10);
    format!("{prefix}_{db}_{:08x}", rand::random::<u32>())
}

/// A database created for one test. [`ScratchDb::drop_now`] drops it; if that is never reached
/// (a panic, a cancelled task), `Drop` drops it on a thread of its own.
pub struct ScratchDb {
    target: PgTarget,
    pub name: String,
    dropped: bool,
}

impl ScratchDb {
    /// Creates the database `name` on `target`.
    pub async fn create(target: &PgTarget, name: &str) -> Result<Self, String> {
        let mut conn = target
            .options(&target.maintenance_db)
            .connect()
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to the restore-test PostgreSQL at {}:{}: {e}",
                    target.host, target.port
                )
            })?;
        conn.execute(format!("CREATE DATABASE {}", quote_ident(name)).as_str())
            .await
            .map_err(|e| format!("creating the scratch database {name}: {e}"))?;
        let _ = conn.close().await;
        Ok(Self {
            target: target.clone(),
            name: name.to_owned(),
            dropped: false,
        })
    }

    /// Drops the database (terminating any session still in it).
    pub async fn drop_now(mut self) -> Result<(), String> {
        self.dropped = true;
        drop_database(&self.target, &self.name).await
    }
}

/// `DROP DATABASE IF EXISTS … WITH (FORCE)` on `target`.
pub async fn drop_database(target: &PgTarget, name: &str) -> Result<(), String> {
    let mut conn = target
        .options(&target.maintenance_db)
        .connect()
        .await
        .map_err(|e| format!("connecting to drop the scratch database {name}: {e}"))?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    let result = conn.execute(sql.as_str()).await;
    let _ = conn.close().await;
    result
        .map(|_| ())
        .map_err(|e| format!("dropping the scratch database {name}: {e}"))
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (target, name) = (self.target.clone(), self.name.clone());
        tracing::warn!(scratch = %name, "the restore test stopped early; dropping its scratch database");
        // Drop may run on a runtime thread, or during a panic: use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_database(&target, &name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "scratch database left behind"),
            Err(_) => tracing::error!("dropping the scratch database panicked"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The archive's table of contents

/// One table named in `pg_restore --list`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TableRef {
    pub schema: String,
    pub name: String,
}

impl TableRef {
    fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// What the archive announces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Toc {
    /// TABLE entries.
    pub tables: Vec<TableRef>,
    /// TABLE DATA entries.
    pub table_data: Vec<TableRef>,
    /// Entries of any kind.
    pub entries: usize,
}

/// Parses `pg_restore --list` output: `ID; TABLEOID OID DESC SCHEMA NAME OWNER` per entry,
/// where DESC may be two words (`TABLE DATA`) and comments start with `;`.
pub fn parse_toc(listing: &str) -> Toc {
    let mut toc = Toc::default();
    for line in listing.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        let Some((_, rest)) = line.split_once("; ") else {
            continue;
        };
        toc.entries += 1;
        // Skip the table and object OIDs.
        let mut fields = rest.splitn(3, ' ');
        let (Some(_), Some(_), Some(rest)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let (is_data, rest) = if let Some(r) = rest.strip_prefix("TABLE DATA ") {
            (true, r)
        } else if let Some(r) = rest.strip_prefix("TABLE ") {
            (false, r)
        } else {
            continue;
        };
        let words: Vec<&str> = rest.split(' ').collect();
        let table = match words.as_slice() {
            [schema, name] => TableRef {
                schema: (*schema).to_owned(),
                name: (*name).to_owned(),
            },
            // The owner is last; a name with spaces sits between schema and owner.
            [schema, middle @ .., _owner] if !middle.is_empty() => TableRef {
                schema: (*schema).to_owned(),
                name: middle.join(" "),
            },
            _ => continue,
        };
        if is_data {
            toc.table_data.push(table);
        } else {
            toc.tables.push(table);
        }
    }
    toc
}

// ---------------------------------------------------------------------------------------------
// The pipeline: encrypted stream → Decryptor → pg_restore (and pg_restore --list)

/// What the pipeline did.
#[derive(Debug, Clone, Default)]
pub struct PipelineReport {
    pub ciphertext_bytes: u64,
    pub archive_bytes: u64,
    pub toc: Toc,
    /// pg_restore's messages (warnings), the last few kB.
    pub pg_restore_messages: String,
    pub elapsed: Duration,
}

/// How to run `pg_restore` into a database.
#[derive(Debug, Clone)]
pub struct RestoreInto {
    pub program: String,
    pub target: PgTarget,
    pub database: String,
}

fn spawn(cmd: &mut Command, what: &str) -> Result<Child, Problem> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Problem::test(format!("cannot start {what}: {e}")))
}

/// Reads all of `r` up to `limit` bytes, keeping the first `limit` (or, `tail`, the last).
async fn read_bounded(mut r: impl AsyncRead + Unpin, limit: usize, tail: bool) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > limit {
                    if tail {
                        out.drain(..out.len() - limit);
                    } else {
                        out.truncate(limit);
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The lines of pg_restore's stderr that say what went wrong, in a sentence.
fn pg_restore_error(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("error:") || l.contains("FATAL") || l.contains("ERROR"))
        .take(3)
        .collect();
    let text = if errors.is_empty() {
        stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    } else {
        errors.join(" | ")
    };
    text.chars().take(600).collect()
}

/// Writes `data` to a child's stdin; `false` once the child has closed it (exited).
async fn feed(stdin: &mut Option<ChildStdin>, data: &[u8]) -> bool {
    let Some(pipe) = stdin.as_mut() else {
        return false;
    };
    if pipe.write_all(data).await.is_err() {
        *stdin = None;
        return false;
    }
    true
}

fn crypto_problem(e: &CryptoError, at: u64) -> Problem {
    match e {
        CryptoError::NotOpensslFormat => Problem::backup(
            "the object is not an encrypted backup: it does not start with openssl's \"Salted__\" header (corrupt, or not encrypted)",
        ),
        CryptoError::TooShort { len, .. } => Problem::backup(format!(
            "the object is truncated: {len} bytes is too short to hold an encrypted backup"
        )),
        CryptoError::Truncated { len } => Problem::backup(format!(
            "the object is truncated: its {len} bytes of ciphertext end in the middle of a 16-byte block"
        )),
        CryptoError::BadPadding => Problem::backup(format!(
            "bad decrypt after {at} bytes: the final block's padding is invalid (the object is truncated or corrupt, or was made with another key)"
        )),
    }
}

/// Streams `source` (an openssl-encrypted pg_dump custom archive of `expected_len` bytes, when
/// known) through the decryptor into `pg_restore` restoring into `into.database`, and into
/// `pg_restore --list` for the table of contents. Never holds more than one read buffer.
pub async fn restore_stream<R: AsyncRead + Unpin>(
    mut source: R,
    expected_len: Option<u64>,
    key: &[u8],
    into: &RestoreInto,
) -> Result<PipelineReport, Problem> {
    let start = Instant::now();
    let mut list_cmd = Command::new(&into.program);
    list_cmd.arg("--list");
    let mut list = spawn(&mut list_cmd, &format!("{} --list", into.program))?;
    let mut restore_cmd = Command::new(&into.program);
    restore_cmd.args([
        "--no-owner",
        "--no-privileges",
        "--dbname",
        into.database.as_str(),
    ]);
    into.target.apply_env(&mut restore_cmd, &into.database);
    let mut restore = spawn(&mut restore_cmd, &into.program)?;

    let toc_task = tokio::spawn(read_bounded(
        list.stdout.take().expect("piped"),
        TOC_LIMIT,
        false,
    ));
    let list_err = tokio::spawn(read_bounded(
        list.stderr.take().expect("piped"),
        STDERR_KEEP,
        true,
    ));
    let restore_err = tokio::spawn(read_bounded(
        restore.stderr.take().expect("piped"),
        STDERR_KEEP,
        true,
    ));
    drop(restore.stdout.take());
    let mut list_in = list.stdin.take();
    let mut restore_in = restore.stdin.take();

    let mut dec = Decryptor::new(key);
    let mut buf = vec![0u8; READ_BUFFER];
    let mut report = PipelineReport::default();
    let mut head_checked = false;
    let mut head = Vec::with_capacity(PG_DUMP_MAGIC.len());
    // Reading stops early when pg_restore exits before the end (it says why on stderr).
    let mut feeding = true;
    let mut stream_problem = None;
    while feeding {
        let n = match source.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                stream_problem = Some(Problem::test(format!(
                    "the download was interrupted after {} bytes{}: {e}",
                    report.ciphertext_bytes,
                    expected_len.map_or(String::new(), |l| format!(" of {l}"))
                )));
                break;
            }
        };
        report.ciphertext_bytes += n as u64;
        let plain = match dec.update(&buf[..n]) {
            Ok(p) => p,
            Err(e) => {
                stream_problem = Some(crypto_problem(&e, report.ciphertext_bytes));
                break;
            }
        };
        if !head_checked {
            let need = PG_DUMP_MAGIC.len() - head.len();
            head.extend_from_slice(&plain[..need.min(plain.len())]);
            if head.len() == PG_DUMP_MAGIC.len() {
                head_checked = true;
                if head != PG_DUMP_MAGIC {
                    stream_problem = Some(Problem::backup(
                        "bad decrypt: the backup does not decrypt to a pg_dump archive with the current encryption key (wrong key, or not a custom-format dump)",
                    ));
                    break;
                }
            }
        }
        report.archive_bytes += plain.len() as u64;
        feed(&mut list_in, &plain).await;
        feeding = feed(&mut restore_in, &plain).await;
    }
    if stream_problem.is_none() && feeding {
        if let Some(len) = expected_len.filter(|&l| report.ciphertext_bytes < l) {
            stream_problem = Some(Problem::test(format!(
                "the download was truncated: {} of {len} bytes arrived",
                report.ciphertext_bytes
            )));
        }
    }
    if stream_problem.is_none() && feeding {
        match dec.finish() {
            Ok(last) => {
                report.archive_bytes += last.len() as u64;
                head.extend_from_slice(&last);
                if !head_checked && !head.starts_with(PG_DUMP_MAGIC) {
                    stream_problem = Some(Problem::backup(
                        "the backup decrypts, but not to a pg_dump custom-format archive",
                    ));
                }
                feed(&mut list_in, &last).await;
                feed(&mut restore_in, &last).await;
            }
            Err(e) => stream_problem = Some(crypto_problem(&e, report.ciphertext_bytes)),
        }
    }
    if let Some(problem) = stream_problem {
        // pg_restore must not commit a half-fed archive as if it were whole: stop it.
        let _ = restore.start_kill();
        let _ = list.start_kill();
        let _ = restore.wait().await;
        let _ = list.wait().await;
        return Err(problem);
    }
    drop(list_in);
    drop(restore_in);
    let status = restore
        .wait()
        .await
        .map_err(|e| Problem::test(format!("waiting for pg_restore: {e}")))?;
    let stderr = restore_err.await.unwrap_or_default();
    let list_status = list.wait().await.ok();
    let listing = toc_task.await.unwrap_or_default();
    let list_stderr = list_err.await.unwrap_or_default();
    report.elapsed = start.elapsed();
    report.pg_restore_messages = stderr.clone();
    if !status.success() {
        if let Some(reason) = drift::archive_newer_than_pg_restore(&stderr, &into.program) {
            return Err(Problem::test(reason));
        }
        let words = pg_restore_error(&stderr);
        // A server that refused the connection says nothing about the backup.
        let connect = [
            "connection to server",
            "could not connect",
            "password authentication failed",
        ]
        .iter()
        .any(|p| stderr.contains(p));
        let reason = format!("pg_restore exited with {status}: {words}");
        return Err(if connect {
            Problem::test(reason)
        } else {
            Problem::backup(format!(
                "the archive could not be restored (corrupt or incomplete): {reason}"
            ))
        });
    }
    if list_status.is_some_and(|st| !st.success()) {
        return Err(Problem::backup(format!(
            "pg_restore --list could not read the archive's table of contents: {}",
            pg_restore_error(&list_stderr)
        )));
    }
    // An empty database's archive lists no entries: that is a valid, empty restore.
    report.toc = parse_toc(&listing);
    Ok(report)
}

/// What the scratch database holds after the restore, against the table of contents.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checked {
    pub tables_restored: usize,
    pub missing_tables: Vec<String>,
    pub missing_data: Vec<String>,
    pub rows: Vec<(String, i64)>,
    pub rows_total: i64,
}

/// Counts the announced tables found in `db` and the rows of each announced TABLE DATA entry.
pub async fn check_restored(target: &PgTarget, db: &str, toc: &Toc) -> Result<Checked, Problem> {
    let mut conn = target.options(db).connect().await.map_err(|e| {
        Problem::test(format!(
            "cannot connect to the scratch database {db} to check it: {e}"
        ))
    })?;
    let present: Vec<(String, String)> = sqlx::query(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%'",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| Problem::test(format!("listing the restored tables: {e}")))?
    .iter()
    .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
    .collect();
    let has = |t: &TableRef| present.iter().any(|(s, n)| *s == t.schema && *n == t.name);
    let mut checked = Checked::default();
    for t in &toc.tables {
        if has(t) {
            checked.tables_restored += 1;
        } else {
            checked
                .missing_tables
                .push(format!("{}.{}", t.schema, t.name));
        }
    }
    for t in &toc.table_data {
        if !has(t) {
            checked
                .missing_data
                .push(format!("{}.{}", t.schema, t.name));
            continue;
        }
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", t.qualified()))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| {
                Problem::backup(format!(
                    "reading restored table {}.{}: {e}",
                    t.schema, t.name
                ))
            })?;
        checked.rows_total += n;
        checked.rows.push((format!("{}.{}", t.schema, t.name), n));
    }
    let _ = conn.close().await;
    Ok(checked)
}

// ---------------------------------------------------------------------------------------------
// Finding the backup

/// Whether `key` is a backup of `database`: a path segment equal to it, or a file name whose stem
/// (extensions such as `.sql.enc` removed) ends in `-database` / `_database` / `.database`.
pub fn key_matches(key: &str, database: &str) -> bool {
    let mut segments: Vec<&str> = key.split('/').collect();
    let file = segments.pop().unwrap_or_default();
    if segments.contains(&database) {
        return true;
    }
    let mut stem = file;
    for ext in [".enc", ".gz", ".sql", ".dump", ".backup", ".pgdump"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    stem == database
        || stem
            .strip_suffix(database)
            .is_some_and(|rest| rest.ends_with(['-', '_', '.']))
}

/// The database a backup `key` belongs to: the longest configured name it matches.
pub fn database_of<'a>(key: &str, databases: &'a [String]) -> Option<&'a str> {
    databases
        .iter()
        .filter(|d| key_matches(key, d))
        .max_by_key(|d| d.len())
        .map(String::as_str)
}

// ---------------------------------------------------------------------------------------------
// Running tests: on demand and on the schedule

/// Runs restore tests and records them.
pub struct RestoreTester {
    settings: Arc<Settings>,
    store: Store,
    kube: Option<kube::Client>,
    http: reqwest::Client,
}

/// What a request for restore tests asks.
#[derive(Debug, Clone, Default)]
pub struct TestRequest {
    /// One database, or every configured one.
    pub database: Option<String>,
    /// A specific object key instead of the newest backup (needs `database` unless only one is
    /// configured).
    pub object: Option<String>,
    pub trigger: String,
    pub actor: String,
}

/// Why tests could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Invalid(String),
    #[error("restore tests are not configured: set restore_test.target_url (BR_RESTORE_TEST__TARGET_URL) to a PostgreSQL where scratch databases may be created")]
    NotConfigured,
    #[error("recording the restore test: {0}")]
    Store(#[from] StoreError),
}

impl RestoreTester {
    pub fn new(settings: Arc<Settings>, store: Store, kube: Option<kube::Client>) -> Self {
        Self {
            settings,
            store,
            kube,
            http: reqwest::Client::new(),
        }
    }

    /// Whether a scratch PostgreSQL is configured.
    pub fn configured(&self) -> bool {
        !self
            .settings
            .restore_test
            .target_url
            .expose_secret()
            .is_empty()
    }

    /// Checks the request against the configuration: which databases, which object.
    pub fn databases_for(&self, req: &TestRequest) -> Result<Vec<String>, StartError> {
        let configured = &self.settings.target.databases;
        let dbs = match &req.database {
            Some(d) if configured.contains(d) => vec![d.clone()],
            Some(d) => {
                return Err(StartError::Invalid(format!(
                    "unknown database {d:?}; configured: {}",
                    configured.join(", ")
                )))
            }
            None => configured.clone(),
        };
        if let Some(object) = &req.object {
            if dbs.len() != 1 {
                return Err(StartError::Invalid(
                    "object needs database: name the database the object is a backup of".into(),
                ));
            }
            if object.is_empty() || object.len() > 1024 {
                return Err(StartError::Invalid(
                    "object must be an S3 key of 1 to 1024 bytes".into(),
                ));
            }
        }
        if !self.configured() {
            return Err(StartError::NotConfigured);
        }
        Ok(dbs)
    }

    /// Records one `running` test per database; `slot` makes scheduled runs unique per period.
    /// Returns the tests this call recorded (none for a slot another replica took).
    pub async fn start(
        &self,
        req: &TestRequest,
        slot: Option<&str>,
    ) -> Result<Vec<RestoreTest>, StartError> {
        let dbs = self.databases_for(req)?;
        let mut started = Vec::new();
        for db in dbs {
            let new = NewRestoreTest {
                scratch_database: scratch_name(&self.settings.restore_test.scratch_prefix, &db),
                database: db,
                object_key: req.object.clone(),
                trigger: req.trigger.clone(),
                actor: req.actor.clone(),
                slot: slot.map(str::to_owned),
                started_at: Utc::now(),
            };
            if let Some(id) = self.store.insert_restore_test(&new).await? {
                if let Some(t) = self.store.get_restore_test(id).await? {
                    started.push(t);
                }
            }
        }
        Ok(started)
    }

    /// Runs recorded tests one after another and records each outcome; returns them finished.
    pub async fn run(&self, tests: Vec<RestoreTest>) -> Vec<RestoreTest> {
        let mut done = Vec::with_capacity(tests.len());
        for t in tests {
            let id = t.id;
            let outcome = self.execute(&t).await;
            if let Err(e) = self.record(&t, outcome).await {
                tracing::error!(restore_test = id, error = %e, "recording the restore test failed");
            }
            match self.store.get_restore_test(id).await {
                Ok(Some(t)) => done.push(t),
                _ => done.push(t),
            }
        }
        done
    }

    async fn record(&self, t: &RestoreTest, mut outcome: TestResult) -> Result<(), StoreError> {
        let status = outcome.status;
        tracing::info!(
            restore_test = t.id,
            database = %t.database,
            status = status.as_str(),
            reason = outcome.reason.as_deref().unwrap_or(""),
            "restore test finished"
        );
        metrics::counter!("backup_remediator_restore_tests_total", "status" => status.as_str())
            .increment(1);
        self.store.finish_restore_test(t.id, &outcome).await?;
        if status == TestStatus::Failed {
            let incident = self.open_incident(t, &outcome).await?;
            outcome.detail["incident_id"] = json!(incident);
            self.store.set_restore_test_incident(t.id, incident).await?;
        }
        Ok(())
    }

    /// Opens the `PostgreSQLBackupNotRestorable` incident of a failed test, with its reason.
    async fn open_incident(
        &self,
        t: &RestoreTest,
        outcome: &TestResult,
    ) -> Result<i64, StoreError> {
        let reason = outcome.reason.clone().unwrap_or_default();
        let object = outcome
            .object_key
            .clone()
            .or_else(|| t.result.object_key.clone());
        let now = Utc::now();
        let opened = self
            .store
            .open_incident(&NewIncident {
                fingerprint: incident_fingerprint(&t.database),
                alertname: NOT_RESTORABLE_ALERT.to_owned(),
                starts_at: t.started_at,
                severity: "critical".to_owned(),
                labels: json!({ "alertname": NOT_RESTORABLE_ALERT, "severity": "critical",
                                "database": t.database, "source": "restore-test" }),
                annotations: json!({
                    "summary": format!("The newest backup of {} could not be restored", t.database),
                    "description": reason,
                }),
                generator_url: String::new(),
                opened_at: now,
                detail: json!({ "source": "restore_test", "restore_test_id": t.id,
                                "database": t.database, "object": object }),
            })
            .await?;
        self.store
            .append_event(
                opened.id(),
                now,
                "restore_test_failed",
                &json!({ "restore_test_id": t.id, "database": t.database, "object": object,
                         "reason": reason, "scratch_database": t.scratch_database,
                         "checks": outcome.checks, "rto": outcome.rto }),
            )
            .await?;
        // No playbook can fix a backup that does not restore: it goes to people at once, and the
        // notifier tells them (Slack, and a page) like any other escalation.
        self.store
            .settle(
                opened.id(),
                crate::incident::IncidentStatus::Escalated,
                Utc::now(),
                &json!({ "reason": format!("the newest backup of {} failed its restore test: {reason}", t.database),
                         "restore_test_id": t.id, "object": object }),
            )
            .await?;
        metrics::counter!("backup_remediator_escalations_total", "scenario" => "not_restorable")
            .increment(1);
        Ok(opened.id())
    }

    /// One database's test: find, download, decrypt, restore, check; the scratch database is
    /// dropped whatever happens.
    async fn execute(&self, t: &RestoreTest) -> TestResult {
        let start = Instant::now();
        let mut outcome = TestResult {
            detail: json!({}),
            ..TestResult::default()
        };
        let result = self.pipeline(t, &mut outcome).await;
        let (status, reason) = match result {
            Ok(()) => (TestStatus::Passed, None),
            Err(p) if p.backup_at_fault => (TestStatus::Failed, Some(p.reason)),
            Err(p) => (TestStatus::Error, Some(p.reason)),
        };
        outcome.status = status;
        outcome.reason = reason;
        outcome.finished_at = Some(Utc::now());
        outcome.duration_ms = Some(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
        outcome
    }

    async fn pipeline(&self, t: &RestoreTest, out: &mut TestResult) -> Result<(), Problem> {
        let settings = &self.settings;
        let target = PgTarget::parse(&settings.restore_test.target_url).map_err(Problem::test)?;
        let ctx = ProbeContext::new(settings.clone(), self.kube.clone(), self.http.clone());
        let secret = ctx
            .backup_secret()
            .await
            .map_err(|e| Problem::test(format!("the backup Secret is unavailable ({e})")))?;
        let key = secret.encryption_key.clone().ok_or_else(|| {
            Problem::test("the backup Secret has no encryption-key to decrypt the backup with")
        })?;
        let job = job_s3(&ctx).await.map_err(Problem::test)?;
        let key_name = match &t.result.object_key {
            Some(k) => k.clone(),
            None => {
                let listing = list_backups_since(
                    &job.client,
                    &job.bucket,
                    &job.prefix,
                    Some(DateTime::UNIX_EPOCH),
                )
                .await
                .map_err(|e| {
                    Problem::test(format!(
                        "listing s3://{}/{}: {}",
                        job.bucket,
                        job.prefix,
                        job.redact(&crate::aws::explain("S3", &e).words)
                    ))
                })?;
                out.detail["listing_complete"] = json!(listing.complete);
                let newest = listing
                    .recent
                    .iter()
                    .rev()
                    .find(|o| database_of(&o.key, &settings.target.databases) == Some(&t.database))
                    .ok_or_else(|| {
                        Problem::backup(format!(
                            "no backup of {} under s3://{}/{} ({} objects seen)",
                            t.database, job.bucket, job.prefix, listing.objects
                        ))
                    })?;
                out.detail["object_last_modified"] = json!(newest.last_modified);
                newest.key.clone()
            }
        };
        out.object_key = Some(key_name.clone());
        let object = job
            .client
            .get_object()
            .bucket(&job.bucket)
            .key(&key_name)
            .send()
            .await
            .map_err(|e| {
                let f = crate::aws::explain("S3", &e);
                let words = job.redact(&f.words);
                if matches!(f.kind, crate::aws::FailureKind::NotFound) || f.code == "NoSuchKey" {
                    Problem::backup(format!(
                        "the backup s3://{}/{key_name} does not exist",
                        job.bucket
                    ))
                } else {
                    Problem::test(format!(
                        "downloading s3://{}/{key_name}: {words}",
                        job.bucket
                    ))
                }
            })?;
        let expected = object.content_length().and_then(|l| u64::try_from(l).ok());
        out.object_bytes = expected.and_then(|l| i64::try_from(l).ok());
        let body = object.body.into_async_read();

        let scratch = ScratchDb::create(&target, &t.scratch_database)
            .await
            .map_err(Problem::test)?;
        let into = RestoreInto {
            program: settings.restore_test.pg_restore.clone(),
            target: target.clone(),
            database: scratch.name.clone(),
        };
        let deadline = Duration::from_secs(settings.restore_test.timeout_seconds);
        let key_bytes = key.expose_secret().as_bytes().to_vec();
        let run = async {
            let report = restore_stream(body, expected, &key_bytes, &into).await?;
            let checked = check_restored(&target, &scratch.name, &report.toc).await?;
            let own = checks::checks_for(&settings.restore_test, &t.database);
            let checks = checks::run_checks(&target, &scratch.name, &own).await?;
            Ok::<_, Problem>((report, checked, checks))
        };
        let result = match tokio::time::timeout(deadline, run).await {
            Ok(r) => r,
            Err(_) => Err(Problem::test(format!(
                "the restore test did not finish within restore_test.timeout_seconds ({} s)",
                deadline.as_secs()
            ))),
        };
        let dropped = scratch.drop_now().await;
        out.detail["scratch_dropped"] = json!(dropped.is_ok());
        if let Err(e) = &dropped {
            tracing::error!(error = %e, "the scratch database could not be dropped");
            out.detail["scratch_drop_error"] = json!(e);
        }
        let (report, checked, checks) = result?;
        let verdict = checks::judge(
            out,
            &settings.restore_test,
            &t.database,
            report.elapsed,
            checks,
        );
        out.archive_bytes = i64::try_from(report.archive_bytes).ok();
        out.object_bytes = i64::try_from(report.ciphertext_bytes).ok();
        out.tables_expected = i64::try_from(report.toc.tables.len()).ok();
        out.table_data_expected = i64::try_from(report.toc.table_data.len()).ok();
        out.tables_restored = i64::try_from(checked.tables_restored).ok();
        out.rows_restored = Some(checked.rows_total);
        let secs = report.elapsed.as_secs_f64().max(1e-6);
        out.detail["restore_ms"] = json!(report.elapsed.as_millis() as u64);
        out.detail["archive_mb_per_s"] =
            json!(((report.archive_bytes as f64 / 1e6 / secs) * 10.0).round() / 10.0);
        out.detail["toc_entries"] = json!(report.toc.entries);
        out.detail["rows"] = checked
            .rows
            .iter()
            .map(|(t, n)| (t.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        let warnings = pg_restore_error(&report.pg_restore_messages);
        if !warnings.is_empty() {
            out.detail["pg_restore_messages"] = json!(warnings);
        }
        if !checked.missing_tables.is_empty() || !checked.missing_data.is_empty() {
            let mut missing = checked.missing_tables.clone();
            missing.extend(checked.missing_data.iter().cloned());
            missing.sort();
            missing.dedup();
            out.detail["missing"] = json!(missing);
            return Err(Problem::backup(format!(
                "{} of {} tables the archive announces are missing after the restore: {}",
                missing.len(),
                report.toc.tables.len(),
                missing
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        verdict
    }

    /// The schedule: every `schedule_hours`, one test of each database, claimed through the store
    /// so that replicas run each period once. Stops when `stop` turns true.
    pub async fn run_schedule(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let cfg = &self.settings.restore_test;
        if !cfg.enabled {
            return;
        }
        if !self.configured() {
            tracing::info!("scheduled restore tests are off: restore_test.target_url is not set");
            return;
        }
        self.interrupt_stale().await;
        let period = cfg.schedule_hours.saturating_mul(3600) as i64;
        let mut last = None;
        loop {
            let now = Utc::now().timestamp();
            let slot = now / period;
            if last != Some(slot) {
                last = Some(slot);
                let req = TestRequest {
                    trigger: "schedule".into(),
                    actor: "schedule".into(),
                    ..TestRequest::default()
                };
                match self
                    .start(&req, Some(&format!("schedule:{period}:{slot}")))
                    .await
                {
                    Ok(tests) if tests.is_empty() => {}
                    Ok(tests) => {
                        tracing::info!(tests = tests.len(), "scheduled restore tests started");
                        self.run(tests).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "scheduled restore tests could not start")
                    }
                }
            }
            let next = (slot + 1) * period - Utc::now().timestamp();
            let wait = Duration::from_secs(next.clamp(1, 300) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Tests left `running` by a stopped process: marked `error`, their scratch databases dropped.
    async fn interrupt_stale(&self) {
        let older = Utc::now()
            - chrono::Duration::seconds(self.settings.restore_test.timeout_seconds as i64 + 300);
        let stale = match self
            .store
            .interrupt_stale_restore_tests(older, Utc::now())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "looking for interrupted restore tests failed");
                return;
            }
        };
        let Ok(target) = PgTarget::parse(&self.settings.restore_test.target_url) else {
            return;
        };
        for name in stale {
            if let Err(e) = drop_database(&target, &name).await {
                tracing::warn!(error = %e, "dropping an interrupted test's scratch database");
            }
        }
    }
}

/// The incident fingerprint of a database's failed restore tests: stable, 16 hex digits.
pub fn incident_fingerprint(database: &str) -> String {
    let digest = sha2::Sha256::digest(format!("restore-test:{database}").as_bytes());
    hex::encode(digest)[..16].to_owned()
}

#[cfg(test)]
mod tests;
