//! Probes: each asks one system one question of the runbook and returns a [`Finding`]. All the
//! probes of an incident start together ([`run_all`]); each has a deadline, and a probe that
//! fails, hangs or panics becomes a finding with status `error` — never an aborted incident.
//!
//! A probe never puts a secret value in a finding, a log line or an error message: only its
//! presence, its length, or a short fingerprint ([`fingerprint`]).

pub mod backup_job;
pub mod backup_metrics;
pub mod cloudnativepg;
pub mod database;
pub mod disk;
pub mod encryption;
pub mod iam;
pub mod pgbackrest;
pub mod primary;
pub mod s3;
pub mod schedule;
pub mod secret;
pub mod versions;
pub mod wal_archive;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::Utc;
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::config::Settings;
use crate::domain::finding::{ConnectFailure, Finding, ProbeOutput, Signal};
pub use secret::{BackupSecret, SecretUnavailable};

/// One question to one system.
pub trait Probe: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput>;
    /// Whether the probe asks anything of this target: by default, whether it belongs to the
    /// target's backup source (`backup.source`).
    fn applies(&self, settings: &Settings) -> bool {
        settings.source().uses_probe(self.name())
    }
    /// A deadline of its own instead of `probes.deadline_ms` (a slow command line tool).
    fn deadline(&self, _settings: &Settings) -> Option<Duration> {
        None
    }
}

/// Why a diagnosis must change nothing at all, not even a probe's own test object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnly {
    /// `backup-remediator replay`: diagnose and print the plan.
    Replay,
    /// The policy in force is a dry run: plan and record, change nothing.
    DryRun,
}

impl ReadOnly {
    /// How a finding names it.
    pub fn words(self) -> &'static str {
        match self {
            Self::Replay => "replay",
            Self::DryRun => "dry run",
        }
    }
}

/// What probes share for one diagnosis: settings, clients, and the backup Secret (read once).
pub struct ProbeContext {
    pub settings: Arc<Settings>,
    /// Set when the run must write nothing (the S3 probe then skips its write check).
    pub read_only: Option<ReadOnly>,
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

/// The AWS clients, built once and shared by every diagnosis of a process and every target:
/// building one loads TLS roots and credential providers, which per incident cost more than the
/// calls they make. One client per distinct endpoint and credentials (targets that share them
/// share the client).
#[derive(Default)]
pub struct Clients {
    /// By IAM endpoint, region and the service's own access key id.
    iam: tokio::sync::Mutex<std::collections::HashMap<String, aws_sdk_iam::Client>>,
    /// The backup jobs' S3 clients, by endpoint, region, path style and a fingerprint of the
    /// credentials (never the values): the Secret is read for every diagnosis and may change.
    s3: std::sync::Mutex<std::collections::HashMap<String, aws_sdk_s3::Client>>,
}

/// How many distinct S3 clients are kept; past it the cache starts again (rotated credentials
/// leave old entries behind).
const MAX_S3_CLIENTS: usize = 1024;

impl ProbeContext {
    pub fn new(settings: Arc<Settings>, kube: Option<kube::Client>, http: reqwest::Client) -> Self {
        Self {
            settings,
            read_only: None,
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
            .with_read_only(self.read_only)
    }

    /// Marks the run as one that must write nothing (`None`: writes that check access are fine).
    pub fn with_read_only(mut self, read_only: Option<ReadOnly>) -> Self {
        self.read_only = read_only;
        self
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
    pub fn aws_limits(&self) -> crate::infra::aws::Limits {
        crate::infra::aws::Limits::for_deadline(Duration::from_millis(
            self.settings.probes.deadline_ms,
        ))
    }

    /// The IAM client with the service's own credentials (`[iam]` keys, else the default chain),
    /// built on first use.
    pub async fn iam_client(&self) -> aws_sdk_iam::Client {
        let settings = &self.settings;
        let key = format!(
            "{}|{}|{}",
            settings.iam.endpoint, settings.s3.region, settings.iam.access_key_id
        );
        let mut cached = self.clients.iam.lock().await;
        if let Some(client) = cached.get(&key) {
            return client.clone();
        }
        let own = (!settings.iam.access_key_id.is_empty()).then(|| {
            aws_credential_types::Credentials::new(
                settings.iam.access_key_id.clone(),
                settings.iam.secret_access_key.expose_secret().to_owned(),
                None,
                None,
                "backup-remediator-config",
            )
        });
        let client = crate::infra::aws::iam_client(
            &settings.iam,
            &settings.s3.region,
            own,
            self.aws_limits(),
        )
        .await;
        cached.insert(key, client.clone());
        client
    }

    /// The S3 client acting as the backup job with these credentials; rebuilt only when they
    /// change.
    pub fn s3_client(
        &self,
        key_id: &secrecy::SecretString,
        secret_key: &secrecy::SecretString,
    ) -> aws_sdk_s3::Client {
        let s3 = &self.settings.s3;
        let id = format!(
            "{}|{}|{}|{}",
            s3.endpoint,
            s3.region,
            s3.force_path_style,
            fingerprint(
                format!("{}\n{}", key_id.expose_secret(), secret_key.expose_secret()).as_bytes(),
            )
        );
        let mut cached = self.clients.s3.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = cached.get(&id) {
            return client.clone();
        }
        let client = crate::infra::aws::s3_client(
            s3,
            crate::infra::aws::job_credentials(key_id, secret_key),
            self.aws_limits(),
        );
        if cached.len() >= MAX_S3_CLIENTS {
            cached.clear();
        }
        cached.insert(id, client.clone());
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
        Arc::new(pgbackrest::PgBackRest),
        Arc::new(wal_archive::WalArchive),
        Arc::new(cloudnativepg::CloudNativePg),
    ];
    all.into_iter()
        .filter(|p| settings.probes.enabled.iter().any(|n| n == p.name()))
        .collect()
}

/// Starts every probe at once and waits for each to finish or reach `deadline` (or the probe's
/// own, see [`Probe::deadline`]). Findings come back in the order of `probes`; total time is
/// that of the slowest probe (or the deadline).
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
            let deadline = p.deadline(&ctx.settings).unwrap_or(deadline);
            // The probe's own duration is measured in its task: findings are collected in order,
            // so measuring at collection would charge a fast probe for a slow one before it.
            let task = tokio::spawn(async move {
                let out = tokio::time::timeout(deadline, probe.run(ctx)).await;
                (out, clock.elapsed())
            });
            (p.name(), started_at, clock, deadline, task)
        })
        .collect();
    let mut findings = Vec::with_capacity(started.len());
    for (name, started_at, clock, deadline, task) in started {
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
    use crate::domain::finding::Status;
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
