//! Running restore tests: on demand (API, CLI) and on the schedule shared by replicas.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::Digest;
use tokio::sync::watch;

use super::pipeline::pg_restore_error;
use super::{
    check_restored, checks, database_of, drop_database, list_every_backup, restore_stream,
    scratch_name, NewRestoreTest, PgTarget, Problem, RestoreInto, RestoreTest, ScratchDb,
    TestResult, TestStatus,
};
use crate::config::Settings;
use crate::domain::restore_test::RestoreStart;
use crate::probes::s3::job_s3;
use crate::probes::ProbeContext;
use crate::store::{Store, StoreError};

/// Runs restore tests and records them.
pub struct RestoreTester {
    /// The target whose backups this tester restores.
    pub(super) target: String,
    pub(super) settings: Arc<Settings>,
    pub(super) store: Store,
    kube: Option<kube::Client>,
    http: reqwest::Client,
}

/// What a request for restore tests asks.
#[derive(Debug, Clone, Default)]
pub struct TestRequest {
    /// One database, or every configured one.
    pub database: Option<String>,
    /// A specific object key instead of the newest backup (needs `database` unless only one is
    /// configured).
    pub object: Option<String>,
    pub trigger: String,
    pub actor: String,
}

/// Why a runbook procedure (restore tests, a manual backup) could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The request does not fit the configuration; the message says how.
    #[error("{0}")]
    Invalid(String),
    #[error("unknown database {given:?}; configured: {}", .configured.join(", "))]
    UnknownDatabase {
        given: String,
        configured: Vec<String>,
    },
    /// The requested object is not in the bucket.
    #[error("the object s3://{bucket}/{key} does not exist")]
    UnknownObject { bucket: String, key: String },
    /// `restore_test.target_url` connects as a superuser and that is not allowed.
    #[error("restore_test.target_url connects as {user}, a superuser: a tampered archive would run its SQL with superuser rights; use a role with CREATEDB only, or set restore_test.allow_superuser = true")]
    Superuser { user: String },
    /// The scratch server could not be asked about its role.
    #[error("checking the restore_test.target_url role: {0}")]
    Scratch(#[from] super::ScratchError),
    #[error("restore tests are not configured: set restore_test.target_url (BR_RESTORE_TEST__TARGET_URL) to a PostgreSQL where scratch databases may be created")]
    NotConfigured,
    #[error("no Kubernetes API is configured (in-cluster, KUBECONFIG or kubernetes.api_url): the manual backup Job cannot be created")]
    NoKubernetes,
    /// A backup Job of the target is running (one at a time, whatever started it): the
    /// sentence names it.
    #[error("{0}")]
    Busy(String),
    /// The policy's budget for manual backups is used up: the sentence says how.
    #[error("{0}")]
    OverBudget(String),
    /// Recording the `what` (`restore test`, `manual backup`) failed.
    #[error("recording the {what}: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: StoreError,
    },
}

impl StartError {
    /// Recording the `what` failed.
    pub(crate) fn recording(what: &'static str) -> impl Fn(StoreError) -> Self {
        move |source| Self::Store { what, source }
    }
}

impl RestoreTester {
    pub fn new(settings: Arc<Settings>, store: Store, kube: Option<kube::Client>) -> Self {
        Self::with_http(settings, store, kube, reqwest::Client::new())
    }

    /// [`RestoreTester::new`] sharing `http` (one client for every target's tester: each client
    /// holds its own pool and TLS roots, which 200 targets would otherwise load 200 times).
    pub fn with_http(
        settings: Arc<Settings>,
        store: Store,
        kube: Option<kube::Client>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            target: settings.kubernetes.namespace.clone(),
            settings,
            store,
            kube,
            http,
        }
    }

    /// Names the target this tester works for (its settings are that target's).
    pub fn for_target(mut self, name: &str) -> Self {
        self.target = name.to_owned();
        self
    }

    /// The target this tester works for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The target's backup source.
    pub fn source(&self) -> crate::domain::source::BackupSource {
        self.settings.source()
    }

    /// Whether a scratch PostgreSQL is configured.
    pub fn configured(&self) -> bool {
        !self
            .settings
            .restore_test
            .target_url
            .expose_secret()
            .is_empty()
    }

    /// Checks the request against the configuration: which databases, which object.
    pub fn databases_for(&self, req: &TestRequest) -> Result<Vec<String>, StartError> {
        let configured = &self.settings.target.databases;
        let dbs = match &req.database {
            Some(d) if configured.contains(d) => vec![d.clone()],
            Some(d) => {
                return Err(StartError::UnknownDatabase {
                    given: d.clone(),
                    configured: configured.clone(),
                })
            }
            None => configured.clone(),
        };
        if let Some(object) = &req.object {
            if dbs.len() != 1 {
                return Err(StartError::Invalid(
                    "object needs database: name the database the object is a backup of".into(),
                ));
            }
            if object.is_empty() || object.len() > 1024 {
                return Err(StartError::Invalid(
                    "object must be an S3 key of 1 to 1024 bytes".into(),
                ));
            }
        }
        if self.source() != crate::domain::source::BackupSource::PgDumpCronJob {
            return Err(StartError::Invalid(format!(
                "target {} backs up with {}: this restore test restores pg_dump archives from S3; \
                 its own (pgbackrest restore into a scratch server) is not served here yet",
                self.target,
                self.source()
            )));
        }
        if !self.configured() {
            return Err(StartError::NotConfigured);
        }
        Ok(dbs)
    }

    /// Refuses a superuser `restore_test.target_url` unless `restore_test.allow_superuser`
    /// (checked at `serve` start-up, when the schedule starts and before each test).
    pub async fn refuse_superuser(&self) -> Result<(), StartError> {
        if self.settings.restore_test.allow_superuser || !self.configured() {
            return Ok(());
        }
        let target = PgTarget::parse(&self.settings.restore_test.target_url)?;
        if super::guard::is_superuser(&target).await? {
            return Err(StartError::Superuser { user: target.user });
        }
        Ok(())
    }

    /// Refuses a requested object S3 says does not exist (a mistyped key is the caller's
    /// mistake, not a backup that fails to restore). When S3 cannot tell, the test runs.
    async fn refuse_missing(&self, key: &str) -> Result<(), StartError> {
        let ctx = ProbeContext::new(self.settings.clone(), self.kube.clone(), self.http.clone());
        let Ok(job) = job_s3(&ctx).await else {
            return Ok(());
        };
        match super::guard::object_exists(&job, key).await {
            Some(false) => Err(StartError::UnknownObject {
                bucket: job.bucket.clone(),
                key: key.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Records one `running` test per database; `slot` makes scheduled runs unique per period.
    /// Returns the tests this call recorded (none for a slot another replica took).
    pub async fn start(
        &self,
        req: &TestRequest,
        slot: Option<&str>,
    ) -> Result<Vec<RestoreTest>, StartError> {
        let dbs = self.databases_for(req)?;
        self.refuse_superuser().await?;
        if let Some(key) = &req.object {
            self.refuse_missing(key).await?;
        }
        let now = Utc::now();
        let news: Vec<NewRestoreTest> = dbs
            .iter()
            .map(|db| NewRestoreTest {
                scratch_database: scratch_name(&self.settings.restore_test.scratch_prefix, db),
                database: db.clone(),
                target: Some(self.target.clone()),
                object_key: req.object.clone(),
                trigger: req.trigger.clone(),
                actor: req.actor.clone(),
                slot: slot.map(str::to_owned),
                started_at: now,
            })
            .collect();
        // One run per target at a time: a run tests its databases one after another.
        let per_test = self.settings.restore_test.timeout_seconds + 300;
        let running_seconds =
            i64::try_from(per_test * self.settings.target.databases.len().max(1) as u64)
                .unwrap_or(i64::MAX / 2);
        let recording = StartError::recording("restore test");
        let ids = match self
            .store
            .begin_restore_tests(&news, running_seconds)
            .await
            .map_err(&recording)?
        {
            RestoreStart::Started(ids) => ids,
            RestoreStart::Busy { id, database } => {
                return Err(StartError::Busy(format!(
                    "restore test {id} ({database}) is running: one restore test run per target at a time"
                )))
            }
        };
        let mut started = Vec::new();
        for id in ids {
            if let Some(t) = self.store.get_restore_test(id).await.map_err(&recording)? {
                started.push(t);
            }
        }
        Ok(started)
    }

    /// Runs recorded tests one after another and records each outcome; returns them finished.
    pub async fn run(&self, tests: Vec<RestoreTest>) -> Vec<RestoreTest> {
        let mut done = Vec::with_capacity(tests.len());
        for t in tests {
            let id = t.id;
            let outcome = self.execute(&t).await;
            if let Err(e) = self.record(&t, outcome).await {
                tracing::error!(restore_test = id, error = %e, "recording the restore test failed");
            }
            match self.store.get_restore_test(id).await {
                Ok(Some(t)) => done.push(t),
                _ => done.push(t),
            }
        }
        done
    }

    async fn record(&self, t: &RestoreTest, mut outcome: TestResult) -> Result<(), StoreError> {
        let status = outcome.status;
        tracing::info!(
            restore_test = t.id,
            database = %t.database,
            status = status.as_str(),
            reason = outcome.reason.as_deref().unwrap_or(""),
            "restore test finished"
        );
        crate::metrics::restore_test(status.as_str());
        self.store.finish_restore_test(t.id, &outcome).await?;
        match status {
            TestStatus::Failed => {
                let incident = self.incident_of_failure(t, &outcome).await?;
                outcome.detail["incident_id"] = json!(incident);
                self.store.set_restore_test_incident(t.id, incident).await?;
            }
            TestStatus::Passed => self.resolve_incident(t, &outcome).await?,
            _ => {}
        }
        Ok(())
    }

    /// One database's test: find, download, decrypt, restore, check; the scratch database is
    /// dropped whatever happens.
    async fn execute(&self, t: &RestoreTest) -> TestResult {
        let start = Instant::now();
        let mut outcome = TestResult {
            detail: json!({}),
            ..TestResult::default()
        };
        let result = self.pipeline(t, &mut outcome).await;
        let (status, reason) = match result {
            Ok(()) => (TestStatus::Passed, None),
            Err(p) if p.backup_at_fault => (TestStatus::Failed, Some(p.reason)),
            Err(p) => (TestStatus::Error, Some(p.reason)),
        };
        outcome.status = status;
        outcome.reason = reason;
        outcome.finished_at = Some(Utc::now());
        outcome.duration_ms = Some(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
        outcome
    }

    async fn pipeline(&self, t: &RestoreTest, out: &mut TestResult) -> Result<(), Problem> {
        let settings = &self.settings;
        let target = PgTarget::parse(&settings.restore_test.target_url).map_err(Problem::test)?;
        let ctx = ProbeContext::new(settings.clone(), self.kube.clone(), self.http.clone());
        let secret = ctx
            .backup_secret()
            .await
            .map_err(|e| Problem::test(format!("the backup Secret is unavailable ({e})")))?;
        let key = secret.encryption_key.clone().ok_or_else(|| {
            Problem::test("the backup Secret has no encryption-key to decrypt the backup with")
        })?;
        let job = job_s3(&ctx).await.map_err(Problem::test)?;
        let key_name = match &t.result.object_key {
            Some(k) => k.clone(),
            None => {
                let listing = list_every_backup(&job).await.map_err(Problem::test)?;
                out.detail["listing_complete"] = json!(listing.complete());
                // Only a complete listing knows which backup is the newest, or that none is.
                if let Some(why) = job.incomplete(&listing) {
                    return Err(Problem::test(format!(
                        "the newest backup of {} cannot be known: {why}",
                        t.database
                    )));
                }
                let newest = listing.newest_where(|o| {
                    database_of(&o.key, &settings.target.databases) == Some(&t.database)
                });
                let newest = newest.ok_or_else(|| {
                    Problem::backup(format!(
                        "no backup of {} under s3://{}/{} ({} keys seen)",
                        t.database, job.bucket, job.prefix, listing.keys
                    ))
                })?;
                out.detail["object_last_modified"] = json!(newest.last_modified);
                newest.key.clone()
            }
        };
        out.object_key = Some(key_name.clone());
        let object = job
            .client
            .get_object()
            .bucket(&job.bucket)
            .key(&key_name)
            .send()
            .await
            .map_err(|e| {
                let f = crate::infra::aws::explain("S3", &e);
                let words = job.redact(&f.words);
                if matches!(f.kind, crate::infra::aws::FailureKind::NotFound)
                    || f.code == "NoSuchKey"
                {
                    // Gone between the listing (or the request) and the download: nothing
                    // is known against the backups, so the test ends `error`.
                    Problem::test(format!(
                        "the backup s3://{}/{key_name} does not exist",
                        job.bucket
                    ))
                } else {
                    Problem::test(format!(
                        "downloading s3://{}/{key_name}: {words}",
                        job.bucket
                    ))
                }
            })?;
        let expected = object.content_length().and_then(|l| u64::try_from(l).ok());
        out.object_bytes = expected.and_then(|l| i64::try_from(l).ok());
        let body = object.body.into_async_read();

        let scratch = ScratchDb::create(&target, &t.scratch_database)
            .await
            .map_err(Problem::test)?;
        let into = RestoreInto {
            program: settings.restore_test.pg_restore.clone(),
            target: target.clone(),
            database: scratch.name.clone(),
        };
        let deadline = Duration::from_secs(settings.restore_test.timeout_seconds);
        let key_bytes = key.expose_secret().as_bytes().to_vec();
        let run = async {
            let report = restore_stream(body, expected, &key_bytes, &into).await?;
            let checked = check_restored(&target, &scratch.name, &report.toc).await?;
            let own = checks::checks_for(&settings.restore_test, &t.database);
            let checks = checks::run_checks(&target, &scratch.name, &own).await?;
            Ok::<_, Problem>((report, checked, checks))
        };
        let result = match tokio::time::timeout(deadline, run).await {
            Ok(r) => r,
            Err(_) => Err(Problem::test(format!(
                "the restore test did not finish within restore_test.timeout_seconds ({} s)",
                deadline.as_secs()
            ))),
        };
        let dropped = scratch.drop_now().await;
        out.detail["scratch_dropped"] = json!(dropped.is_ok());
        if let Err(e) = &dropped {
            tracing::error!(error = %e, "the scratch database could not be dropped");
            out.detail["scratch_drop_error"] = json!(e.to_string());
        }
        let (report, checked, checks) = result?;
        let verdict = checks::judge(
            out,
            &settings.restore_test,
            &t.database,
            report.elapsed,
            checks,
        );
        out.archive_bytes = i64::try_from(report.archive_bytes).ok();
        out.object_bytes = i64::try_from(report.ciphertext_bytes).ok();
        out.tables_expected = i64::try_from(report.toc.tables.len()).ok();
        out.table_data_expected = i64::try_from(report.toc.table_data.len()).ok();
        out.tables_restored = i64::try_from(checked.tables_restored).ok();
        out.rows_restored = Some(checked.rows_total);
        let secs = report.elapsed.as_secs_f64().max(1e-6);
        out.detail["restore_ms"] = json!(report.elapsed.as_millis() as u64);
        out.detail["archive_mb_per_s"] =
            json!(((report.archive_bytes as f64 / 1e6 / secs) * 10.0).round() / 10.0);
        out.detail["toc_entries"] = json!(report.toc.entries);
        out.detail["rows"] = checked
            .rows
            .iter()
            .map(|(t, n)| (t.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        let warnings = pg_restore_error(&report.pg_restore_messages);
        if !warnings.is_empty() {
            out.detail["pg_restore_messages"] = json!(warnings);
        }
        if !checked.missing_tables.is_empty() || !checked.missing_data.is_empty() {
            let mut missing = checked.missing_tables.clone();
            missing.extend(checked.missing_data.iter().cloned());
            missing.sort();
            missing.dedup();
            out.detail["missing"] = json!(missing);
            return Err(Problem::backup(format!(
                "{} of {} tables the archive announces are missing after the restore: {}",
                missing.len(),
                report.toc.tables.len(),
                missing
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        verdict
    }

    /// The schedule: every `schedule_hours`, one test of each database, claimed through the store
    /// so that replicas run each period once. Stops when `stop` turns true.
    pub async fn run_schedule(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let cfg = &self.settings.restore_test;
        if !cfg.enabled {
            return;
        }
        if !self.configured() {
            tracing::info!("scheduled restore tests are off: restore_test.target_url is not set");
            return;
        }
        if let Err(e) = self.refuse_superuser().await {
            if matches!(e, StartError::Superuser { .. }) {
                tracing::error!(error = %e, "scheduled restore tests are off");
                return;
            }
            tracing::warn!(error = %e, "the restore-test role could not be checked; each test checks it again");
        }
        self.interrupt_stale().await;
        let period = cfg.schedule_hours.saturating_mul(3600) as i64;
        let mut last = None;
        loop {
            let now = Utc::now().timestamp();
            let slot = now / period;
            if last != Some(slot) {
                last = Some(slot);
                let req = TestRequest {
                    trigger: "schedule".into(),
                    actor: "schedule".into(),
                    ..TestRequest::default()
                };
                match self
                    .start(&req, Some(&format!("schedule:{period}:{slot}")))
                    .await
                {
                    Ok(tests) if tests.is_empty() => {}
                    Ok(tests) => {
                        tracing::info!(tests = tests.len(), "scheduled restore tests started");
                        self.run(tests).await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "scheduled restore tests could not start")
                    }
                }
            }
            let next = (slot + 1) * period - Utc::now().timestamp();
            let wait = Duration::from_secs(next.clamp(1, 300) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Tests left `running` by a stopped process: marked `error`, their scratch databases dropped.
    pub(crate) async fn interrupt_stale(&self) {
        let older = Utc::now()
            - chrono::Duration::seconds(self.settings.restore_test.timeout_seconds as i64 + 300);
        let stale = match self
            .store
            .interrupt_stale_restore_tests(older, Utc::now())
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "looking for interrupted restore tests failed");
                return;
            }
        };
        let Ok(target) = PgTarget::parse(&self.settings.restore_test.target_url) else {
            return;
        };
        for name in stale {
            if let Err(e) = drop_database(&target, &name).await {
                tracing::warn!(error = %e, "dropping an interrupted test's scratch database");
            }
        }
    }
}

/// The incident fingerprint of a database's failed restore tests: stable, 16 hex digits.
pub fn incident_fingerprint(database: &str) -> String {
    let digest = sha2::Sha256::digest(format!("restore-test:{database}").as_bytes());
    hex::encode(digest)[..16].to_owned()
}
