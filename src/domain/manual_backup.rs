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
