//! The sections of [`super::Settings`]: one typed struct per table of `config/default.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// How the service acts on a diagnosis (what it may do is the policy's business).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationSettings {
    /// Plan (and, as policy allows, act) after each diagnosis.
    pub enabled: bool,
    /// The policy TOML; empty = the built-in policy in dry-run mode.
    pub policy_file: String,
    /// A claim on an incident lasts this long unless renewed; another replica takes over after.
    pub lease_seconds: u64,
    /// Incidents this process works at once (diagnosis, plan, steps); the rest wait in the
    /// store. A plan waiting for an approval does not count.
    pub window: usize,
    /// Steps that change the world (Jobs, patches, SQL) running at once across every target of
    /// the fleet and every replica: a storm of failing targets never starts a storm of Jobs.
    pub max_concurrent_actions: i64,
    /// Deadline of a backup Job started to verify a fix.
    pub job_deadline_seconds: u64,
    /// How long to wait for the database to answer again (scenario 1) before the next step.
    pub database_wait_seconds: u64,
    /// Verification Jobs are named `<prefix>-<incident>-<step>`.
    pub job_name_prefix: String,
    /// A superuser (or CREATEROLE) connection to the primary for `repair_backup_role`. Secret.
    pub admin_database_url: SecretString,
    /// How `repair_backup_role` grants read access: `auto` (pg_read_all_data where the server
    /// has it, else schema grants) or `schema_grants`.
    pub read_access: String,
}

/// The runbook's restore test: newest backup of each database → decrypt → `pg_restore` into a
/// scratch database → check → drop. On demand and on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTestSettings {
    /// Run the test on the schedule (needs `target_url`).
    pub enabled: bool,
    /// Hours between scheduled runs (168 = the runbook's weekly test).
    pub schedule_hours: u64,
    /// Targets tested each period, those whose last test is oldest first.
    pub targets_per_period: usize,
    /// The PostgreSQL where scratch databases are created and dropped (a role with CREATEDB).
    /// Secret. Empty: restore tests are unavailable.
    pub target_url: SecretString,
    /// Allow `target_url` to connect as a superuser. Off by default: a tampered archive runs
    /// its SQL as that role, so the restore tester and `serve` refuse a superuser unless this
    /// is true.
    pub allow_superuser: bool,
    /// Scratch databases are named `<prefix>_<database>_<random>`.
    pub scratch_prefix: String,
    /// The `pg_restore` program (its major version must be at least the dump's).
    pub pg_restore: String,
    /// Deadline of one database's test, download and restore included.
    pub timeout_seconds: u64,
    /// The longest the restore phase (download, decrypt, pg_restore) may take; a slower restore
    /// fails the test. 0 = no limit.
    pub rto_minutes: f64,
    /// Named SQL queries run on the restored scratch database; each must return one `true`.
    pub checks: Vec<RestoreCheck>,
}

/// One `[[restore_test.checks]]`: a query that must return exactly one boolean `true` on the
/// restored copy of `database`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreCheck {
    /// A database of `target.databases`.
    pub database: String,
    /// Unique per database; shown in results.
    pub name: String,
    /// One SELECT, e.g. `select max(created_at) > now() - interval '26 hours' from orders`.
    pub sql: String,
}

/// The runbook's manual backup Job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualBackupSettings {
    /// Container image with pg_dump, openssl and the aws CLI already installed: the Job runs as
    /// a non-root user on a read-only root filesystem and installs nothing (the Dockerfile's
    /// `backup-tools` target builds one).
    pub image: String,
    /// The Job pod's ServiceAccount: one without RBAC grants (its token is not even mounted).
    pub service_account: String,
    /// The container's requests and limits.
    pub resources: JobResources,
    /// S3 storage class of the uploaded objects.
    pub storage_class: String,
    /// Objects go under `<s3.prefix><subdir>/`.
    pub subdir: String,
    /// Jobs are named `<job_name_prefix>-<YYYYmmdd-HHMMSS>-<random>`.
    pub job_name_prefix: String,
    /// How long the Job may run (also its activeDeadlineSeconds).
    pub deadline_seconds: u64,
    /// Retries of the pod before the Job fails.
    pub backoff_limit: i32,
    /// Finished Jobs are deleted by Kubernetes after this long (0 = kept).
    pub ttl_seconds_after_finished: i32,
}

/// A container's requests and limits: resource (`cpu`, `memory`, `ephemeral-storage`) → quantity.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResources {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

impl JobResources {
    /// The key of the first entry that is not `cpu`, `memory` or `ephemeral-storage` with a
    /// positive quantity (`250m`, `2`, `512Mi`, `10Gi`), so the API server never refuses the Job.
    pub(super) fn invalid_key(&self) -> Option<String> {
        let number = |n: &str| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_digit() || c == '.')
                && n.parse::<f64>().is_ok_and(|v| v > 0.0)
        };
        let valid = |name: &str, q: &str| match name {
            "cpu" => number(q.strip_suffix('m').unwrap_or(q)),
            "memory" | "ephemeral-storage" => {
                crate::domain::quantity::parse(q).is_some_and(|b| b > 0)
            }
            _ => false,
        };
        [("requests", &self.requests), ("limits", &self.limits)]
            .into_iter()
            .flat_map(|(kind, m)| m.iter().map(move |(n, q)| (kind, n, q)))
            .find(|(_, n, q)| !valid(n, q))
            .map(|(kind, n, _)| format!("manual_backup.resources.{kind}.{n}"))
    }
}

/// Who hears of incidents (Slack, PagerDuty) and when an incident escalates on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Slack bot token (chat.postMessage, then chat.update in place). Secret.
    pub slack_token: SecretString,
    /// Incoming-webhook URL, used when there is no bot token (new messages for major changes
    /// only). Secret: the URL is the credential.
    pub slack_webhook_url: SecretString,
    /// Channel the bot posts to (an id such as C0123, or #name).
    pub slack_channel: String,
    pub slack_api_url: String,
    /// The Slack app's signing secret: `POST /slack/interactions` accepts only requests signed
    /// with it. Secret.
    pub slack_signing_secret: SecretString,
    /// Slack user ids (U…/W…) who may approve or reject from the incident's message.
    pub slack_approvers: Vec<String>,
    /// A file with more approvers, one Slack user id per line, read at each click: the on-call
    /// rotation changes without a restart (an emptied file adds none; an unreadable or
    /// malformed one keeps the last list read).
    pub slack_approvers_file: String,
    /// PagerDuty Events API v2 routing key; empty = no paging. Secret.
    pub pagerduty_routing_key: SecretString,
    pub pagerduty_url: String,
    /// Base URL under which people reach this service (messages link to `/ui/incidents/{id}`).
    pub external_url: String,
    /// Escalate an open incident this long after it opened (runbook: 2); 0 = never.
    pub escalate_after_hours: u64,
    /// The backup RPO target; escalations state whether the last good backup breaches it.
    pub rpo_hours: u64,
    /// How often the outbox and the timelines are polled.
    pub poll_interval_ms: u64,
    /// Deadline of one request to Slack or PagerDuty.
    pub request_timeout_ms: u64,
    /// Longest wait between two attempts of a delivery.
    pub max_backoff_seconds: u64,
}

/// The freshness watchdog (a dead man's switch): backups that stop without any alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSettings {
    /// Check the newest backup of each database and the backup metric every period.
    pub enabled: bool,
    /// The period; replicas share it through the store (each period is checked once).
    pub interval_minutes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    pub deadline_ms: u64,
    pub enabled: Vec<String>,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSettings {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSettings {
    pub namespace: String,
    pub backup_job_selector: String,
    pub backup_cronjob: String,
    pub backup_secret: String,
    pub primary_statefulset: String,
    pub primary_service: String,
    pub primary_pvc: String,
    pub api_url: String,
    /// A kubeconfig file to connect with (empty: `api_url`, in-cluster, or `$KUBECONFIG`).
    pub kubeconfig: String,
    /// The kubeconfig context to use (empty: the file's current context).
    pub context: String,
    pub log_lines: i64,
}

impl KubeSettings {
    /// Names the cluster connection these settings make: targets with the same key share one
    /// client.
    pub fn connection_key(&self) -> String {
        format!(
            "{}\u{0}{}\u{0}{}",
            self.api_url, self.kubeconfig, self.context
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    pub host: String,
    pub port: u16,
    pub databases: Vec<String>,
    pub connect_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSettings {
    pub threshold_percent: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub endpoint: String,
    pub force_path_style: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamSettings {
    pub user: String,
    pub policy: String,
    pub endpoint: String,
    /// The service's own credentials for reading IAM; empty = the default AWS chain
    /// (environment, web identity / IRSA, profile, instance metadata).
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSettings {
    pub min_key_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub body_limit_bytes: usize,
    pub shutdown_grace_seconds: u64,
    /// The request head must be complete this long after the server starts waiting for it.
    pub header_read_timeout_ms: u64,
    /// The request body must be complete this long after the head (else 408).
    pub body_timeout_ms: u64,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout_ms: u64,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Empty means the embedded SQLite file. May hold a password, hence secret.
    pub url: SecretString,
    pub sqlite_path: PathBuf,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    pub handled: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeSettings {
    pub flush_interval_ms: u64,
    pub cache_capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}
