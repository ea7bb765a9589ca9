//! The record of a restore test (`restore_tests`): its status, what it found, its checks and
//! the restore phase against the RTO. The procedure itself is `crate::runbook::restore`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::names::string_enum;

/// The alertname of the incident a failed restore test opens.
pub const NOT_RESTORABLE_ALERT: &str = "PostgreSQLBackupNotRestorable";

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
    /// The target whose backup was tested (absent for tests recorded before targets).
    pub target: Option<String>,
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
    /// The target whose backup is tested.
    pub target: Option<String>,
    pub object_key: Option<String>,
    pub trigger: String,
    pub actor: String,
    /// The schedule period it belongs to (`schedule:<n>`): one test per database and period
    /// across replicas. `None` for tests on demand.
    pub slot: Option<String>,
    pub scratch_database: String,
    pub started_at: DateTime<Utc>,
}

/// How asking to record restore tests ended: one test run per target at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreStart {
    /// Recorded (none for a schedule slot another replica took).
    Started(Vec<i64>),
    /// Restore test `id` (of `database`) is running.
    Busy { id: i64, database: String },
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
    pub fn backup(reason: impl Into<String>) -> Self {
        Self {
            backup_at_fault: true,
            reason: reason.into(),
        }
    }
    /// The test could not be carried out: `reason` is any error or sentence.
    pub fn test(reason: impl std::fmt::Display) -> Self {
        Self {
            backup_at_fault: false,
            reason: reason.to_string(),
        }
    }
}

/// One check's outcome, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CheckResult {
    /// The check's name (`restore_test.checks[].name`).
    pub name: String,
    /// The query that was run.
    pub sql: String,
    pub passed: bool,
    /// What the query returned, in words (`true`, `false`, `NULL`, `2 rows`, `int4 1`); absent
    /// when it failed.
    pub value: Option<String>,
    /// Why the check failed.
    pub reason: Option<String>,
    pub duration_ms: i64,
}

/// The restore phase against the RTO.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RtoResult {
    /// `restore_test.rto_minutes` when the test ran.
    pub rto_minutes: f64,
    /// How long the restore phase took (download, decrypt, pg_restore).
    pub restore_ms: i64,
    /// Whether it finished within the RTO.
    pub met: bool,
}

impl RtoResult {
    pub fn new(rto_minutes: f64, restore_ms: i64) -> Self {
        Self {
            rto_minutes,
            restore_ms,
            met: (restore_ms as f64) <= rto_minutes * 60_000.0,
        }
    }
}
