//! The pipeline: encrypted stream → [`Decryptor`] → `pg_restore` (and `pg_restore --list`), then
//! the restored database checked against the table of contents.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{ConnectOptions, Connection, Row};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use super::{
    drift, parse_toc, PgTarget, Problem, TableRef, Toc, READ_BUFFER, STDERR_KEEP, TOC_LIMIT,
};
use crate::infra::crypto::{CryptoError, Decryptor};
use crate::probes::encryption::PG_DUMP_MAGIC;

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
pub(super) fn pg_restore_error(stderr: &str) -> String {
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
