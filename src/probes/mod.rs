//! Probes: each asks one system one question of the runbook and returns a [`Finding`]. All the
//! probes of an incident start together ([`run_all`]); each has a deadline, and a probe that
//! fails, hangs or panics becomes a finding with status `error` — never an aborted incident.
//!
//! A probe never puts a secret value in a finding, a log line or an error message: only its
//! presence, its length, or a short fingerprint ([`fingerprint`]).

pub mod backup_job;
pub mod backup_metrics;
pub mod database;
pub mod disk;
pub mod encryption;
pub mod iam;
pub mod patterns;
pub mod primary;
pub mod s3;
pub mod schedule;
pub mod secret;
pub mod versions;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use utoipa::ToSchema;

use crate::config::Settings;
pub use patterns::LogPattern;
pub use secret::{BackupSecret, SecretUnavailable};

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

/// What a probe concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The system looked healthy for this question.
    Ok,
    /// The probe found something wrong (see the signals).
    Problem,
    /// The probe could not get an answer (unreachable, timed out, not allowed).
    Error,
    /// The probe did not run (disabled, or something it needs is unavailable).
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Problem => "problem",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }
}

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
    /// The primary did not accept a connection.
    DatabaseUnreachable {
        failure: ConnectFailure,
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
    fn new(status: Status, summary: impl Into<String>) -> Self {
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

/// One question to one system.
pub trait Probe: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput>;
}

/// What probes share for one diagnosis: settings, clients, and the backup Secret (read once).
pub struct ProbeContext {
    pub settings: Arc<Settings>,
    /// `None` when no Kubernetes API is configured or reachable: kube probes are skipped.
    pub kube: Option<kube::Client>,
    pub http: reqwest::Client,
    clients: Arc<Clients>,
    secret: OnceCell<Result<BackupSecret, SecretUnavailable>>,
}

/// The HTTP client of the probes, built once per process and shared: connect attempts are
/// bounded by the probe deadline (no total timeout: the deadline in `run_all` is the one
/// authority on time).
pub fn http_client(settings: &Settings) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_millis(
            settings.probes.deadline_ms,
        ))
        .build()
        .unwrap_or_default()
}

/// The AWS clients, built once and shared by every diagnosis of a process: building one loads
/// TLS roots and credential providers, which per incident cost more than the calls they make.
#[derive(Default)]
pub struct Clients {
    iam: OnceCell<aws_sdk_iam::Client>,
    /// The S3 client of the backup job, for the credentials it was built with (a fingerprint of
    /// them, never the values): the Secret is read for every diagnosis and may have changed.
    s3: std::sync::Mutex<Option<(String, aws_sdk_s3::Client)>>,
}

impl ProbeContext {
    pub fn new(settings: Arc<Settings>, kube: Option<kube::Client>, http: reqwest::Client) -> Self {
        Self {
            settings,
            kube,
            http,
            clients: Arc::default(),
            secret: OnceCell::new(),
        }
    }

    /// A new context with the same settings and clients, whose backup Secret is read again.
    pub fn fresh(&self) -> Self {
        Self::new(self.settings.clone(), self.kube.clone(), self.http.clone())
            .with_clients(self.clients.clone())
    }

    /// Shares `clients` with other contexts (the engine's diagnoses).
    pub fn with_clients(mut self, clients: Arc<Clients>) -> Self {
        self.clients = clients;
        self
    }

    /// A context whose backup Secret is already known (tests, `replay` without a cluster).
    pub fn with_secret(self, secret: Result<BackupSecret, SecretUnavailable>) -> Self {
        let cell = OnceCell::new();
        let _ = cell.set(secret);
        Self {
            secret: cell,
            ..self
        }
    }

    /// The backup Secret, read from Kubernetes on first use and shared by every probe.
    pub async fn backup_secret(&self) -> Result<&BackupSecret, SecretUnavailable> {
        let k = &self.settings.kubernetes;
        self.secret
            .get_or_init(|| secret::load(self.kube.as_ref(), &k.namespace, &k.backup_secret))
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Limits of one AWS call within the probe deadline.
    pub fn aws_limits(&self) -> crate::aws::Limits {
        crate::aws::Limits::for_deadline(Duration::from_millis(self.settings.probes.deadline_ms))
    }

    /// The IAM client with the service's own credentials (`[iam]` keys, else the default chain),
    /// built on first use.
    pub async fn iam_client(&self) -> aws_sdk_iam::Client {
        let settings = &self.settings;
        self.clients
            .iam
            .get_or_init(|| async {
                let own = (!settings.iam.access_key_id.is_empty()).then(|| {
                    aws_credential_types::Credentials::new(
                        settings.iam.access_key_id.clone(),
                        settings.iam.secret_access_key.expose_secret().to_owned(),
                        None,
                        None,
                        "backup-remediator-config",
                    )
                });
                crate::aws::iam_client(&settings.iam, &settings.s3.region, own, self.aws_limits())
                    .await
            })
            .await
            .clone()
    }

    /// The S3 client acting as the backup job with these credentials; rebuilt only when they
    /// change.
    pub fn s3_client(
        &self,
        key_id: &secrecy::SecretString,
        secret_key: &secrecy::SecretString,
    ) -> aws_sdk_s3::Client {
        let id = fingerprint(
            format!("{}\n{}", key_id.expose_secret(), secret_key.expose_secret()).as_bytes(),
        );
        let mut cached = self.clients.s3.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((for_id, client)) = cached.as_ref() {
            if *for_id == id {
                return client.clone();
            }
        }
        let client = crate::aws::s3_client(
            &self.settings.s3,
            crate::aws::job_credentials(key_id, secret_key),
            self.aws_limits(),
        );
        *cached = Some((id, client.clone()));
        client
    }
}

/// The installation's key for [`fingerprint`]: set once from the store; until then (or in a
/// process without a store) a random per-process key.
static FINGERPRINT_KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Loads (or creates, once per installation) the fingerprint key from the store. Fingerprints
/// made before this in the same process use a random key.
pub async fn use_installation_key(
    store: &crate::store::Store,
) -> Result<(), crate::store::StoreError> {
    if FINGERPRINT_KEY.get().is_some() {
        return Ok(());
    }
    let fresh = hex::encode(rand::random::<[u8; 32]>());
    let key = store.installation_key(&fresh).await?;
    let _ = FINGERPRINT_KEY.set(key.into_bytes());
    Ok(())
}

/// A short, non-reversible fingerprint of a secret value, for evidence ("same key as before?"):
/// HMAC-SHA256 under the installation's key, so that the API never serves an unsalted hash of a
/// password that could be brute-forced offline.
pub fn fingerprint(secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let key = FINGERPRINT_KEY.get_or_init(|| rand::random::<[u8; 32]>().to_vec());
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(secret);
    let digest = mac.finalize().into_bytes();
    format!("hmac-sha256:{}", hex::encode(&digest[..8]))
}

/// Builds the enabled probes, in [`NAMES`] order.
pub fn enabled(settings: &Settings) -> Vec<Arc<dyn Probe>> {
    let all: Vec<Arc<dyn Probe>> = vec![
        Arc::new(backup_metrics::BackupMetrics),
        Arc::new(backup_job::BackupJob),
        Arc::new(secret::SecretProbe),
        Arc::new(database::Database),
        Arc::new(versions::Versions),
        Arc::new(primary::Primary),
        Arc::new(disk::Disk),
        Arc::new(s3::S3),
        Arc::new(iam::Iam),
        Arc::new(encryption::Encryption),
    ];
    all.into_iter()
        .filter(|p| settings.probes.enabled.iter().any(|n| n == p.name()))
        .collect()
}

/// Starts every probe at once and waits for each to finish or reach `deadline`. Findings come
/// back in the order of `probes`; total time is that of the slowest probe (or the deadline).
pub async fn run_all(
    probes: &[Arc<dyn Probe>],
    ctx: Arc<ProbeContext>,
    deadline: Duration,
) -> Vec<Finding> {
    let started: Vec<_> = probes
        .iter()
        .map(|p| {
            let (probe, ctx) = (p.clone(), ctx.clone());
            let started_at = Utc::now();
            let clock = Instant::now();
            // The probe's own duration is measured in its task: findings are collected in order,
            // so measuring at collection would charge a fast probe for a slow one before it.
            let task = tokio::spawn(async move {
                let out = tokio::time::timeout(deadline, probe.run(ctx)).await;
                (out, clock.elapsed())
            });
            (p.name(), started_at, clock, task)
        })
        .collect();
    let mut findings = Vec::with_capacity(started.len());
    for (name, started_at, clock, task) in started {
        let (out, elapsed) = match task.await {
            Ok((Ok(out), elapsed)) => (out, elapsed),
            Ok((Err(_), elapsed)) => (
                ProbeOutput::error(format!("timed out after {} ms", deadline.as_millis())),
                elapsed,
            ),
            Err(e) if e.is_panic() => (
                ProbeOutput::error("the probe crashed (a bug: see the service log)"),
                clock.elapsed(),
            ),
            Err(_) => (
                ProbeOutput::error("the probe was cancelled"),
                clock.elapsed(),
            ),
        };
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        crate::metrics::probe_run(name, duration_ms as f64 / 1e3, out.status.as_str());
        findings.push(Finding {
            probe: name.to_owned(),
            status: out.status,
            summary: out.summary,
            evidence: out.evidence,
            signals: out.signals,
            started_at,
            duration_ms,
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    struct Sleepy(&'static str, u64);

    impl Probe for Sleepy {
        fn name(&self) -> &'static str {
            self.0
        }
        fn run(&self, _ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
            let ms = self.1;
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ProbeOutput::ok(format!("slept {ms} ms"))
            })
        }
    }

    struct Panics;

    impl Probe for Panics {
        fn name(&self) -> &'static str {
            "panics"
        }
        fn run(&self, _ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
            Box::pin(async { panic!("boom") })
        }
    }

    pub(crate) fn test_ctx() -> Arc<ProbeContext> {
        let settings = Settings::from_toml("").unwrap();
        Arc::new(ProbeContext::new(
            Arc::new(settings),
            None,
            reqwest::Client::new(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn probes_run_together_and_a_hung_one_times_out_without_blocking_the_others() {
        let probes: Vec<Arc<dyn Probe>> = vec![
            Arc::new(Sleepy("fast", 100)),
            Arc::new(Sleepy("hangs", 60_000)),
            Arc::new(Panics),
            Arc::new(Sleepy("slow", 900)),
        ];
        let start = tokio::time::Instant::now();

        let findings = run_all(&probes, test_ctx(), Duration::from_secs(1)).await;

        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "the deadline, not the sum"
        );
        let by = |n: &str| findings.iter().find(|f| f.probe == n).unwrap().clone();
        assert_eq!(by("fast").status, Status::Ok);
        assert_eq!(
            by("fast").duration_ms,
            100,
            "measured in its own task, not at collection"
        );
        assert_eq!(by("slow").duration_ms, 900);
        assert_eq!(by("slow").status, Status::Ok);
        assert_eq!(by("hangs").status, Status::Error);
        assert_eq!(by("hangs").summary, "timed out after 1000 ms");
        assert_eq!(by("panics").status, Status::Error);
        assert_eq!(
            findings
                .iter()
                .map(|f| f.probe.as_str())
                .collect::<Vec<_>>(),
            ["fast", "hangs", "panics", "slow"]
        );
    }

    #[test]
    fn a_fingerprint_does_not_reveal_the_secret() {
        let f = fingerprint(b"correct horse battery staple");
        assert!(f.starts_with("hmac-sha256:") && f.len() == 28 && !f.contains("horse"));
        assert_eq!(f, fingerprint(b"correct horse battery staple"));
        let unsalted = hex::encode(&sha2::Sha256::digest(b"correct horse battery staple")[..8]);
        assert!(!f.contains(&unsalted), "not the plain SHA-256 of the value");
    }
}
