//! The WAL-archive guard's judgement. While `archive_command` fails, PostgreSQL keeps every WAL
//! segment it could not archive (each marked `.ready`), so pg_wal grows at the rate WAL is
//! written until the volume fills and the primary stops. From one reading of
//! `pg_stat_archiver`, the `.ready` segments and the volume, this says whether archiving is
//! failing, since when, why (from the server log's lines about the archive command), and when
//! the volume fills at the WAL rate seen since the failure began. Pure: data in, data out.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::duration::human;
use crate::domain::quantity::approx;

/// One reading of the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// `archive_mode` (`off`, `on`, `always`).
    pub archive_mode: String,
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// `pg_current_wal_lsn()` in bytes.
    pub current_lsn: u64,
    pub wal_segment_size: u64,
    /// Segments waiting for the archiver (`.ready` in pg_wal/archive_status).
    pub ready_count: u64,
    /// When the oldest of them became ready.
    pub oldest_ready: Option<DateTime<Utc>>,
    /// The server log's lines about the archive command, newest last (empty: not readable).
    pub log_lines: Vec<String>,
}

/// The volume that holds pg_wal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// Why archiving fails, as far as the log tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", rename_all = "snake_case")]
pub enum Cause {
    /// The object store refused the credentials (revoked, rotated, wrong key).
    Credentials,
    /// The bucket does not exist.
    Bucket,
    /// The repository or object store could not be reached.
    Network,
    /// The repository's disk is full.
    RepositoryDisk,
    /// The repository (or its stanza) is missing or unreadable.
    Repository,
    /// The archive command failed with this exit status, for no reason the log names.
    ExitStatus { code: i32 },
    /// No log line could be read.
    Unknown,
}

impl Cause {
    /// Reads the cause from the log lines (newest first wins).
    pub fn from_log(lines: &[String]) -> Self {
        let text = lines.join("\n").to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
        if has(&[
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "accessdenied",
            "access denied",
            "expiredtoken",
            "[403]",
            "403 forbidden",
        ]) {
            Cause::Credentials
        } else if has(&["nosuchbucket", "bucket does not exist"]) {
            Cause::Bucket
        } else if has(&[
            "no space left",
            "disk full",
            "[enospc]",
            "insufficient space",
        ]) {
            Cause::RepositoryDisk
        } else if has(&[
            "could not resolve",
            "connection refused",
            "unable to connect",
            "timed out",
            "timeout",
            "network is unreachable",
            "no route to host",
        ]) {
            Cause::Network
        } else if has(&[
            "missing stanza",
            "stanza-create",
            "unable to load info file",
            "unable to open missing file",
            "does not exist",
            "no such file or directory",
            "[055]",
            "[103]",
        ]) {
            Cause::Repository
        } else if let Some(code) = lines.iter().rev().find_map(|l| exit_code(l)) {
            Cause::ExitStatus { code }
        } else {
            Cause::Unknown
        }
    }

    /// A sentence for the incident.
    pub fn words(&self) -> String {
        match self {
            Cause::Credentials => {
                "the repository refused the credentials (revoked or rotated key?)".into()
            }
            Cause::Bucket => "the repository's bucket does not exist".into(),
            Cause::Network => {
                "the repository could not be reached (network, DNS or endpoint)".into()
            }
            Cause::RepositoryDisk => "the repository's disk is full".into(),
            Cause::Repository => "the repository or its stanza is missing or unreadable".into(),
            Cause::ExitStatus { code } => format!("archive_command exits with status {code}"),
            Cause::Unknown => {
                "the cause is not in a readable server log (grant pg_read_server_files to read it)"
                    .into()
            }
        }
    }
}

/// The exit status in PostgreSQL's "archive command failed with exit code N".
fn exit_code(line: &str) -> Option<i32> {
    let rest = line.split("failed with exit code ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The guard's judgement of one reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub failing: bool,
    /// When the oldest segment still waiting became ready (else the last failure).
    pub failing_since: Option<DateTime<Utc>>,
    /// WAL kept in pg_wal for the archiver.
    pub pending_bytes: u64,
    /// WAL written per hour since the failure began.
    pub rate_bytes_per_hour: Option<f64>,
    /// When the volume is full at that rate.
    pub full_at: Option<DateTime<Utc>>,
    pub volume: Option<Volume>,
    pub cause: Cause,
    /// The forecast as a sentence (always set when failing).
    pub forecast: String,
    /// From the reading: failures counted by pg_stat_archiver, and the last segment that failed.
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
}

/// Judges one reading taken at `now`.
pub fn assess(r: &Reading, volume: Option<Volume>, now: DateTime<Utc>) -> Assessment {
    let failing = r.archive_mode != "off"
        && r.failed_count > 0
        && match (r.last_failed_time, r.last_archived_time) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            (None, _) => false,
        };
    let failing_since = if failing {
        r.oldest_ready.or(r.last_failed_time)
    } else {
        None
    };
    let partial = if r.wal_segment_size > 0 {
        r.current_lsn % r.wal_segment_size
    } else {
        0
    };
    let pending_bytes = r.ready_count * r.wal_segment_size + partial;
    let elapsed = failing_since.map(|t| (now - t).num_seconds());
    // Under a minute of history, a rate says nothing.
    let rate = elapsed
        .filter(|s| *s >= 60)
        .map(|s| pending_bytes as f64 * 3600.0 / s as f64);
    let full_at = match (rate, volume) {
        (Some(rate), Some(v)) if rate > 0.0 => {
            let secs = v.free_bytes as f64 / rate * 3600.0;
            Some(now + chrono::Duration::seconds(secs.min(1e10) as i64))
        }
        _ => None,
    };
    let cause = if failing {
        Cause::from_log(&r.log_lines)
    } else {
        Cause::Unknown
    };
    let forecast = forecast_words(pending_bytes, rate, volume, full_at, now);
    Assessment {
        failing,
        failing_since,
        pending_bytes,
        rate_bytes_per_hour: rate,
        full_at,
        volume,
        cause,
        forecast,
        failed_count: r.failed_count,
        last_failed_wal: r.last_failed_wal.clone(),
    }
}

fn forecast_words(
    pending: u64,
    rate: Option<f64>,
    volume: Option<Volume>,
    full_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> String {
    let kept = format!("{} of WAL kept in pg_wal for the archiver", approx(pending));
    match (rate, volume, full_at) {
        (Some(rate), Some(v), Some(at)) => format!(
            "{kept}; at {}/h the pg_wal volume ({} free of {}) is full in about {} ({}), and the \
             primary stops",
            approx(rate as u64),
            approx(v.free_bytes),
            approx(v.total_bytes),
            human((at - now).num_seconds()),
            at.format("%Y-%m-%d %H:%M UTC")
        ),
        (Some(rate), None, _) => format!(
            "{kept}, growing {}/h; the volume is unknown (set wal_archive.volume_path) so no \
             time to full is forecast",
            approx(rate as u64)
        ),
        _ => format!("{kept}; too little history yet for a rate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn now() -> DateTime<Utc> {
        "2026-12-08T12:00:00Z".parse().unwrap()
    }

    fn failing() -> Reading {
        Reading {
            archive_mode: "on".into(),
            archived_count: 10,
            last_archived_wal: Some("00000001000000000000000A".into()),
            last_archived_time: Some(now() - chrono::Duration::hours(3)),
            failed_count: 40,
            last_failed_wal: Some("00000001000000000000000B".into()),
            last_failed_time: Some(now() - chrono::Duration::seconds(30)),
            current_lsn: 0x0C00_0000 + 4096,
            wal_segment_size: SEG,
            ready_count: 2,
            oldest_ready: Some(now() - chrono::Duration::hours(2)),
            log_lines: vec![
                "ERROR: [039]: HTTP request failed with 403 (Forbidden): InvalidAccessKeyId".into(),
                "LOG:  archive command failed with exit code 39".into(),
            ],
        }
    }

    #[test]
    fn failing_archiving_forecasts_when_the_volume_fills() {
        let v = Volume {
            free_bytes: 64 << 20,
            total_bytes: 10 << 30,
        };
        let a = assess(&failing(), Some(v), now());
        assert!(a.failing);
        assert_eq!(a.failing_since, Some(now() - chrono::Duration::hours(2)));
        assert_eq!(a.pending_bytes, 2 * SEG + 4096);
        // 32 MiB in 2 h: 16 MiB/h; 64 MiB free: full in 4 h.
        let hours = (a.full_at.unwrap() - now()).num_minutes() as f64 / 60.0;
        assert!((hours - 4.0).abs() < 0.05, "{hours}");
        assert_eq!(a.cause, Cause::Credentials);
        assert!(
            a.forecast.contains("is full in about 3 h 59 min")
                || a.forecast.contains("is full in about 4 h"),
            "{}",
            a.forecast
        );
        assert!(
            a.forecast.contains("64.0 MiB free of 10.0 GiB"),
            "{}",
            a.forecast
        );
    }

    #[test]
    fn archiving_that_succeeded_after_its_last_failure_is_not_failing() {
        let mut r = failing();
        r.last_archived_time = Some(now());
        assert!(!assess(&r, None, now()).failing);
        r.archive_mode = "off".into();
        r.last_archived_time = None;
        assert!(!assess(&r, None, now()).failing);
    }

    #[test]
    fn the_cause_comes_from_the_log_else_the_exit_status() {
        let lines = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            Cause::from_log(&lines(&["LOG:  archive command failed with exit code 1"])),
            Cause::ExitStatus { code: 1 }
        );
        assert_eq!(
            Cause::from_log(&lines(&[
                "ERROR: [055]: unable to load info file '/x/archive.info'"
            ])),
            Cause::Repository
        );
        assert_eq!(Cause::from_log(&[]), Cause::Unknown);
    }

    #[test]
    fn without_a_volume_the_forecast_says_what_is_missing() {
        let a = assess(&failing(), None, now());
        assert!(a.full_at.is_none());
        assert!(
            a.forecast.contains("set wal_archive.volume_path"),
            "{}",
            a.forecast
        );
    }
}
