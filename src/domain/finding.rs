//! What a probe establishes: its status, its findings and the signals — facts in the runbook's
//! vocabulary that diagnosis reads. The probes themselves live in `crate::probes`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::names::string_enum;

pub use super::patterns::LogPattern;

/// Every probe's name, in the order findings are shown.
pub const NAMES: &[&str] = &[
    "backup_metrics",
    "backup_job",
    "secret",
    "database",
    "versions",
    "primary",
    "disk",
    "s3",
    "iam",
    "encryption",
];

/// The probes of sources other than the runbook's pg_dump CronJob (`backup.source`), run only
/// for targets of that source (or, for `wal_archive`, targets with a guarded primary).
pub const SOURCE_NAMES: &[&str] = &["pgbackrest", "wal_archive", "cloudnativepg"];

/// Whether `name` names a probe.
pub fn is_probe(name: &str) -> bool {
    NAMES.contains(&name) || SOURCE_NAMES.contains(&name)
}

string_enum!(
    /// What a probe concluded.
    #[derive(ToSchema)]
    pub Status "probe status" {
        /// The system looked healthy for this question.
        Ok => "ok",
        /// The probe found something wrong (see the signals).
        Problem => "problem",
        /// The probe could not get an answer (unreachable, timed out, not allowed).
        Error => "error",
        /// The probe did not run (disabled, or something it needs is unavailable).
        Skipped => "skipped",
    }
);

/// How a connection attempt failed (the pg_isready distinctions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Dns,
    Unreachable,
    Other,
}

impl ConnectFailure {
    /// True when nothing answered: refused, timed out, the name did not resolve, no route to
    /// the host. `Other` (a TLS or protocol error, a reset) came from something that answered.
    pub fn is_no_answer(self) -> bool {
        matches!(
            self,
            Self::Refused | Self::Timeout | Self::Dns | Self::Unreachable
        )
    }
}

/// A fact a probe established, in the runbook's vocabulary. Diagnosis reads only these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    // backup_metrics
    /// `postgres_backup_last_success_timestamp` has no series: the job never reported.
    BackupNeverReported,
    /// The last successful backup is older than 24 h.
    LastSuccessStale { age_seconds: i64 },
    /// `postgres_backup_errors_total` increased over 24 h.
    BackupErrors { increase: f64 },
    // backup_job
    /// No Job matches the backup selector.
    NoBackupJob,
    /// The newest backup Job failed.
    JobFailed { job: String, reason: String },
    /// A pod of the backup Job ended abnormally (Evicted, OOMKilled, ImagePullBackOff…).
    PodFailed {
        pod: String,
        reason: String,
        message: String,
    },
    /// A log line of the backup pod matches a runbook error pattern.
    LogMatch { pattern: LogPattern, line: String },
    /// The backup CronJob is suspended: no backup runs until it is resumed.
    CronJobSuspended { cronjob: String },
    /// The backup CronJob does not exist (any more).
    CronJobMissing { cronjob: String },
    /// The backup CronJob does not fire: its last run is older than its schedule allows, or it
    /// never ran long after it was created.
    ScheduleNotFiring { cronjob: String, detail: String },
    // secret
    /// The backup Secret does not exist.
    SecretMissing { name: String },
    /// The backup Secret lacks a key the job needs (or it is empty).
    SecretKeyMissing { key: String },
    // database
    /// The primary did not accept a connection: on every configured database (or at TCP).
    DatabaseUnreachable {
        failure: ConnectFailure,
        detail: String,
    },
    /// The primary is up — it answered, or another database did — but the backup user's
    /// connection to `database` failed: refused by the server with SQLSTATE `code` (53300 too
    /// many connections, 57P03 starting up or in recovery…), or, with no code, no answer for
    /// this database alone.
    DatabaseConnectionFailed {
        database: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        detail: String,
    },
    /// The backup user's password was refused.
    AuthenticationFailed { role: String },
    /// The backup role does not exist.
    RoleMissing { role: String },
    /// A configured database does not exist.
    DatabaseMissing { database: String },
    /// The backup role lacks CONNECT on a database.
    NoConnectPrivilege { database: String },
    /// The backup role cannot read tables pg_dump must read.
    NoReadAccess {
        database: String,
        tables: Vec<String>,
    },
    // versions
    /// The backup image's pg_dump is older than the server: pg_dump refuses to dump it.
    ClientOlderThanServer {
        image: String,
        client_major: u32,
        server_major: u32,
        /// The image to set instead.
        suggested_image: String,
    },
    /// The backup image is not an official `postgres:N…` tag: its pg_dump version is unknown.
    ClientVersionUnknown {
        image: String,
        server_major: Option<u32>,
    },
    /// The service's pg_restore is older than the server: restore tests of its dumps fail.
    RestoreClientOlder {
        program: String,
        client_major: u32,
        server_major: u32,
    },
    // primary
    /// The primary StatefulSet / pod is not ready, or the Service has no endpoints.
    PrimaryNotReady { detail: String },
    // disk
    /// The primary's data volume is fuller than the threshold.
    VolumeOverThreshold {
        pvc: String,
        percent: f64,
        threshold: f64,
    },
    /// A backup pod was evicted for lack of ephemeral storage.
    EphemeralStorageExhausted { pod: String },
    // s3
    /// The bucket does not exist.
    BucketMissing { bucket: String },
    /// The job's credentials are unknown or its signature is refused.
    S3InvalidCredentials { code: String },
    /// An S3 operation was denied to the job's credentials.
    S3AccessDenied { operation: String },
    // iam
    /// The backup user's policy does not allow an action the backup needs.
    IamActionDenied { action: String, resource: String },
    // encryption
    /// The encryption key is absent or empty.
    KeyMissing,
    /// The encryption key is shorter than the minimum.
    KeyTooShort { length: usize, minimum: usize },
    /// The newest backup does not decrypt to a pg_dump archive with the current key.
    KeyMismatch { object: String },
    /// Encrypting and decrypting a test block in process failed.
    RoundTripFailed { detail: String },
    // pgbackrest
    /// `pgbackrest info` reports the stanza or its repository unhealthy (status code ≠ 0:
    /// 1 missing stanza path, 2 no valid backups, 3 missing stanza data, …).
    RepositoryUnhealthy {
        stanza: String,
        code: i64,
        message: String,
    },
    /// `pgbackrest check` failed (pgBackRest's error code and message).
    RepositoryCheckFailed {
        stanza: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        message: String,
    },
    /// The repository's newest good backup is older than the RPO, or there is none.
    RepositoryBackupStale {
        stanza: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        age_seconds: Option<i64>,
        rpo_hours: u64,
    },
    /// The backup metric and the repository disagree on whether backups are fresh.
    FreshnessDisagreement {
        #[serde(skip_serializing_if = "Option::is_none")]
        metric_age_seconds: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        repository_age_seconds: Option<i64>,
        rpo_hours: u64,
    },
    // wal_archive
    /// WAL archiving keeps failing: segments wait in pg_wal. `cause` and `forecast` are sentences.
    WalArchiveFailing {
        failed_count: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_failed_wal: Option<String>,
        pending_bytes: u64,
        cause: String,
        forecast: String,
    },
    // cloudnativepg
    /// The CloudNativePG Cluster's `ContinuousArchiving` condition is False: WAL does not reach
    /// the object store (its reason and message, as the operator wrote them).
    ClusterArchivingFailing {
        cluster: String,
        reason: String,
        message: String,
    },
    /// The newest `Backup` of the Cluster failed (its `status.error`).
    ClusterBackupFailed {
        cluster: String,
        backup: String,
        error: String,
    },
    /// A `ScheduledBackup` of the Cluster is suspended: it takes no backup until resumed.
    ScheduledBackupSuspended { scheduled_backup: String },
    /// The Cluster's newest completed backup is older than the RPO, or there is none.
    ClusterBackupStale {
        cluster: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        age_seconds: Option<i64>,
        rpo_hours: u64,
    },
}

impl Signal {
    /// True when this signal says the primary gives no answer at all: every database's
    /// connection was refused, timed out, or its name did not resolve. Only this offers (in the
    /// playbook) and allows (at the gate) a restart of the primary; any answer from the server
    /// — too many connections, starting up, a refused password — means it is up.
    pub fn means_primary_down(&self) -> bool {
        matches!(self, Signal::DatabaseUnreachable { failure, .. } if failure.is_no_answer())
    }
}

/// What one probe found, with timing. Stored with the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    pub probe: String,
    pub status: Status,
    /// One sentence a person reads first.
    pub summary: String,
    /// Structured details (never secret values).
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub signals: Vec<Signal>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
}

/// What a probe returns; the runner adds its name and timing.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutput {
    pub status: Status,
    pub summary: String,
    pub evidence: serde_json::Value,
    pub signals: Vec<Signal>,
}

impl ProbeOutput {
    pub(crate) fn new(status: Status, summary: impl Into<String>) -> Self {
        Self {
            status,
            summary: summary.into(),
            evidence: serde_json::json!({}),
            signals: Vec::new(),
        }
    }
    pub fn ok(summary: impl Into<String>) -> Self {
        Self::new(Status::Ok, summary)
    }
    pub fn problem(summary: impl Into<String>, signals: Vec<Signal>) -> Self {
        Self {
            signals,
            ..Self::new(Status::Problem, summary)
        }
    }
    pub fn error(summary: impl Into<String>) -> Self {
        Self::new(Status::Error, summary)
    }
    pub fn skipped(summary: impl Into<String>) -> Self {
        Self::new(Status::Skipped, summary)
    }
    pub fn with_evidence(mut self, evidence: serde_json::Value) -> Self {
        self.evidence = evidence;
        self
    }
    pub fn with_signals(mut self, signals: Vec<Signal>) -> Self {
        self.signals = signals;
        self
    }
}
