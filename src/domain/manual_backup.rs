//! The record of a manual backup (`manual_backups`): the Job launched, what it backs up, and how
//! it ended. The procedure itself is `crate::runbook::manual_backup`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

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

/// Where a manual backup stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The Job could not be created or watched.
    Error,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        [
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::TimedOut,
            Self::Error,
        ]
        .into_iter()
        .find(|b| b.as_str() == s)
        .ok_or_else(|| format!("unknown manual backup status {s:?}"))
    }
}

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
