//! `wal_archive`: is the primary archiving its WAL? One reading of `pg_stat_archiver`, the WAL
//! position, the segments waiting in `pg_wal/archive_status` and (when readable) the server
//! log's lines about the archive command, judged by [`crate::domain::wal::assess`] with a
//! forecast of when the pg_wal volume fills. Runs for targets with a `wal_archive.database_url`;
//! the WAL-archive guard takes the same reading every `wal_archive.interval_seconds`.
//! Reads only: it never deletes WAL and never changes `archive_command`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{Connection, Row};

use super::{Probe, ProbeContext, ProbeOutput, Signal};
use crate::config::Settings;
use crate::domain::wal::{assess, Assessment, Reading, Volume};

pub struct WalArchive;

/// Why the primary could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connecting to the primary failed: {0}")]
    Connect(sqlx::Error),
    #[error("reading pg_stat_archiver failed: {0}")]
    Query(sqlx::Error),
    #[error("the primary did not answer within {0} ms")]
    TimedOut(u128),
}

/// How much of the end of the server log is read for the archive command's errors.
const LOG_TAIL_BYTES: i64 = 256 * 1024;

/// One reading of the primary at `url` within `deadline`.
pub async fn read(url: &SecretString, deadline: Duration) -> Result<Reading, ReadError> {
    tokio::time::timeout(deadline, read_now(url))
        .await
        .map_err(|_| ReadError::TimedOut(deadline.as_millis()))?
}

async fn read_now(url: &SecretString) -> Result<Reading, ReadError> {
    let mut c = sqlx::PgConnection::connect(url.expose_secret())
        .await
        .map_err(ReadError::Connect)?;
    let row = sqlx::query(
        "SELECT current_setting('archive_mode') AS mode, a.archived_count, a.last_archived_wal,
                a.last_archived_time, a.failed_count, a.last_failed_wal, a.last_failed_time,
                (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn,
                (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size') AS seg
         FROM pg_stat_archiver a",
    )
    .fetch_one(&mut c)
    .await
    .map_err(ReadError::Query)?;
    let ready = sqlx::query(
        "SELECT count(*) AS n, min(modification) AS oldest FROM pg_ls_archive_statusdir()
         WHERE name LIKE '%.ready'",
    )
    .fetch_one(&mut c)
    .await
    .map_err(ReadError::Query)?;
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    let mut reading = Reading {
        archive_mode: row.try_get("mode").map_err(ReadError::Query)?,
        archived_count: row.try_get("archived_count").map_err(ReadError::Query)?,
        last_archived_wal: row.try_get("last_archived_wal").map_err(ReadError::Query)?,
        last_archived_time: row
            .try_get("last_archived_time")
            .map_err(ReadError::Query)?,
        failed_count: row.try_get("failed_count").map_err(ReadError::Query)?,
        last_failed_wal: row.try_get("last_failed_wal").map_err(ReadError::Query)?,
        last_failed_time: row.try_get("last_failed_time").map_err(ReadError::Query)?,
        current_lsn: u(row.try_get("lsn").map_err(ReadError::Query)?),
        wal_segment_size: u(row.try_get("seg").map_err(ReadError::Query)?),
        ready_count: u(ready.try_get("n").map_err(ReadError::Query)?),
        oldest_ready: ready
            .try_get::<Option<DateTime<Utc>>, _>("oldest")
            .map_err(ReadError::Query)?,
        log_lines: Vec::new(),
    };
    // The log needs pg_read_server_files (or a superuser): without it, no cause from the log.
    let log: Result<Option<String>, sqlx::Error> = sqlx::query_scalar(
        "SELECT pg_read_file(f, greatest(0, (pg_stat_file(f)).size - $1), $1)
         FROM pg_current_logfile() AS f WHERE f IS NOT NULL",
    )
    .bind(LOG_TAIL_BYTES)
    .fetch_optional(&mut c)
    .await
    .map(Option::flatten);
    if let Ok(Some(text)) = log {
        reading.log_lines = archive_lines(&text);
    }
    let _ = c.close().await;
    Ok(reading)
}

/// The log's lines about the archive command: each "archive command failed" line with the
/// twelve lines before it (the command's own error output: pgBackRest's errors run to several
/// lines of hints), the newest sixteen. The line that repeats the archive command itself is left
/// out: it may carry credentials.
pub fn archive_lines(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut keep: Vec<usize> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("archive command failed") {
            keep.extend(i.saturating_sub(12)..=i);
        }
    }
    keep.sort_unstable();
    keep.dedup();
    let picked: Vec<String> = keep
        .into_iter()
        .map(|i| lines[i])
        .filter(|l| !l.contains("The failed archive command was"))
        .map(|l| {
            crate::domain::patterns::redact(l.trim())
                .chars()
                .take(300)
                .collect()
        })
        .collect();
    picked[picked.len().saturating_sub(16)..].to_vec()
}

/// The free and total bytes of the volume holding `path` (empty path: unknown).
pub fn volume(path: &str) -> Option<Volume> {
    if path.is_empty() {
        return None;
    }
    let st = rustix::fs::statvfs(path).ok()?;
    Some(Volume {
        free_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// Reads and judges the target's primary at `now`.
pub async fn examine(settings: &Settings, now: DateTime<Utc>) -> Result<Assessment, ReadError> {
    let deadline = Duration::from_millis(settings.probes.deadline_ms);
    let reading = read(&settings.wal_archive.database_url, deadline).await?;
    let v = volume(&settings.wal_archive.volume_path);
    Ok(assess(&reading, v, now))
}

impl Probe for WalArchive {
    fn name(&self) -> &'static str {
        "wal_archive"
    }

    fn applies(&self, settings: &Settings) -> bool {
        !settings.wal_archive.database_url.expose_secret().is_empty()
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let a = match examine(&ctx.settings, Utc::now()).await {
                Ok(a) => a,
                Err(e) => return ProbeOutput::error(e.to_string()),
            };
            let evidence = serde_json::to_value(&a).unwrap_or_default();
            if !a.failing {
                return ProbeOutput::ok(format!("WAL archiving works; {}", a.forecast))
                    .with_evidence(evidence);
            }
            let signal = Signal::WalArchiveFailing {
                failed_count: a.failed_count,
                last_failed_wal: a.last_failed_wal.clone(),
                pending_bytes: a.pending_bytes,
                cause: a.cause.words(),
                forecast: a.forecast.clone(),
            };
            ProbeOutput::problem(crate::domain::diagnosis::describe(&signal), vec![signal])
                .with_evidence(evidence)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_lines_kept_are_the_failures_and_their_output_without_the_command() {
        let log = "LOG:  checkpoint starting\n\
                   ERROR: [103]: unable to find a valid repository\n\
                   LOG:  archive command failed with exit code 103\n\
                   DETAIL:  The failed archive command was: env SECRET=x pgbackrest archive-push\n\
                   LOG:  checkpoint complete\n";
        let kept = archive_lines(log);
        assert_eq!(
            kept,
            [
                "LOG:  checkpoint starting",
                "ERROR: [103]: unable to find a valid repository",
                "LOG:  archive command failed with exit code 103"
            ]
        );
    }

    /// The server log is not ours: a logged statement or connection string before the failure
    /// must not carry its secret into the incident, Slack or the API.
    #[test]
    fn secrets_in_the_kept_server_log_lines_are_redacted() {
        let log = "LOG:  statement: ALTER ROLE backup PASSWORD 'canary-pw-1' LOGIN\n\
                   LOG:  connecting to postgres://app:canary-pw-2@db:5432/x\n\
                   ERROR: aws secret_key=canary-pw-3 refused\n\
                   LOG:  archive command failed with exit code 1\n";
        let kept = archive_lines(log).join("\n");
        assert!(!kept.contains("canary"), "{kept}");
        assert!(kept.contains("archive command failed"), "{kept}");
    }
}
