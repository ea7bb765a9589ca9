//! The record of a manual backup (`manual_backups`): the Job launched, what it backs up, and how
//! it ended. The procedure itself is `crate::runbook::manual_backup`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::names::string_enum;

/// A manual backup as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ManualBackup {
    pub id: i64,
    pub job_name: String,
    pub namespace: String,
    pub databases: Vec<String>,
    pub storage_class: String,
    /// `api` or `cli`.
    pub trigger: String,
    pub actor: String,
    pub status: BackupStatus,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The objects uploaded (checked in S3 after the Job succeeded; planned while it runs).
    pub object_keys: Vec<String>,
    /// Planned keys, sizes found in S3, the Job's outcome.
    #[schema(value_type = Object)]
    pub detail: Value,
}

string_enum!(
    /// Where a manual backup stands.
    #[derive(ToSchema)]
    pub BackupStatus "manual backup status" {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        /// The Job could not be created or watched.
        Error => "error",
    }
);

/// A manual backup about to be recorded.
#[derive(Debug, Clone)]
pub struct NewManualBackup {
    pub job_name: String,
    pub namespace: String,
    pub databases: Vec<String>,
    pub storage_class: String,
    pub trigger: String,
    pub actor: String,
    pub started_at: DateTime<Utc>,
    pub object_keys: Vec<String>,
    pub detail: Value,
}

/// The rules a manual backup starts under, checked in one store transaction.
#[derive(Debug, Clone)]
pub struct StartRules<'a> {
    /// The request's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<&'a str>,
    /// How long a key is remembered (seconds).
    pub key_seconds: i64,
    /// A backup recorded as running is taken as still running for this long (its Job's
    /// deadline and a margin): a record a crashed process left `running` stops blocking then.
    pub running_seconds: i64,
    /// (starts, window in seconds) across all replicas.
    pub budget: (i64, i64),
}

/// How asking to start a manual backup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// Recorded: launch it.
    Started(i64),
    /// The key was seen: this is the backup the first request started (nothing new).
    Replayed(i64),
    /// Another manual backup of the target is running.
    Busy { id: i64, job_name: String },
    /// The budget is used up.
    OverBudget { used: i64 },
}
