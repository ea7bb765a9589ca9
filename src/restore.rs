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

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::names::string_enum;

mod checks;
mod drift;
mod objects;
mod pipeline;
mod scratch;
mod service;
mod toc;
pub use checks::{CheckResult, RtoResult};
pub use objects::{database_of, key_matches, list_every_backup, ListingError};
pub use pipeline::{check_restored, restore_stream, Checked, PipelineReport, RestoreInto};
pub use scratch::{drop_database, quote_ident, scratch_name, PgTarget, ScratchDb, ScratchError};
pub use service::{incident_fingerprint, RestoreTester, StartError, TestRequest};
pub use toc::{parse_toc, TableRef, Toc};

/// The alertname of the incident a failed restore test opens.
pub const NOT_RESTORABLE_ALERT: &str = "PostgreSQLBackupNotRestorable";

/// Bytes read from the download at a time.
const READ_BUFFER: usize = 256 * 1024;
/// pg_restore's stderr kept for the reason (its last bytes).
const STDERR_KEEP: usize = 16 * 1024;
/// Largest `pg_restore --list` output read (a TOC of a few hundred thousand entries).
const TOC_LIMIT: usize = 64 * 1024 * 1024;

string_enum!(
    /// Where a restore test stands or how it ended.
    #[derive(Default, ToSchema)]
    pub TestStatus "restore test status" {
        #[default]
        Running => "running",
        /// Restored, and every announced table is there with its data.
        Passed => "passed",
        /// The backup is not restorable (an incident is opened).
        Failed => "failed",
        /// The test could not be carried out (nothing is said about the backup).
        Error => "error",
    }
);

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
    /// The test could not be carried out: `reason` is any error or sentence.
    fn test(reason: impl std::fmt::Display) -> Self {
        Self {
            backup_at_fault: false,
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
