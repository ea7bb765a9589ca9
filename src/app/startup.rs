//! Building and running the service: store, intake, HTTP server, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::api::{self, AppState, Auth};
use crate::app::telemetry;
use crate::config::Settings;
use crate::domain::policy::Policy;
use crate::runbook::restore::StartError;
use crate::store::{Store, StoreError, StoreOptions};
use crate::workflow::engine::{Engine, Examiner};
use crate::workflow::intake::Intake;
use crate::workflow::remediation::Remediator;
use crate::Error;

/// Connects to the configured store and applies its migrations.
pub async fn open_store(settings: &Settings) -> Result<Store, StoreError> {
    let db = &settings.database;
    let opts = StoreOptions {
        max_connections: db.max_connections,
        acquire_timeout: Duration::from_millis(db.acquire_timeout_ms),
    };
    let store = Store::connect(db.url.expose_secret(), &db.sqlite_path, &opts).await?;
    store.migrate().await?;
    Ok(store)
}

/// The Kubernetes client from the settings, or `None` (with a warning) when there is no cluster:
/// the probes that need it are then skipped rather than failing.
pub async fn kube_client(settings: &Settings) -> Option<kube::Client> {
    match crate::infra::kube::connect(&settings.kubernetes).await {
        Ok(Some(c)) => Some(c),
        Ok(None) => {
            tracing::warn!("no Kubernetes configuration (in-cluster or KUBECONFIG): Kubernetes probes are skipped");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes probes are skipped");
            None
        }
    }
}

/// One Kubernetes client per distinct connection (`kubernetes.api_url`, `kubeconfig`, `context`) of the fleet (`default` is the
/// top-level one's), built once at start-up and shared.
async fn kube_clients(
    settings: &Settings,
    default: Option<kube::Client>,
) -> std::collections::HashMap<String, Option<kube::Client>> {
    let mut out = std::collections::HashMap::new();
    out.insert(settings.kubernetes.connection_key(), default);
    for t in &settings.fleet {
        if let std::collections::hash_map::Entry::Vacant(slot) =
            out.entry(t.settings.kubernetes.connection_key())
        {
            slot.insert(kube_client(&t.settings).await);
        }
    }
    out
}

/// Builds the probes and diagnosis for `settings`.
pub async fn examiner(settings: &Settings) -> Examiner {
    crate::install_crypto_provider();
    Examiner::new(Arc::new(settings.clone()), kube_client(settings).await)
}

/// The policy file named in the settings, or the built-in dry-run policy.
pub fn load_policy(settings: &Settings) -> Result<Policy, Error> {
    let file = &settings.remediation.policy_file;
    if file.is_empty() {
        Ok(Policy::builtin())
    } else {
        Policy::from_file(std::path::Path::new(file)).map_err(Error::Policy)
    }
}

/// How many opened incidents may wait for the engine before the webhook stops handing them over
/// (they are then picked up from the store at the next start).
const WORK_QUEUE: usize = 1024;

/// A bound, ready-to-run service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
    engine: Option<(Arc<Engine>, mpsc::Receiver<i64>)>,
    /// The notifier's time (escalation deadline, retry times); tests inject their own.
    clock: Arc<dyn crate::workflow::notify::Clock>,
    /// The freshness watchdog (its loop runs only when `watchdog.enabled`).
    watchdog: Arc<crate::workflow::watchdog::Watchdog>,
    /// The WAL-archive guard (its loop runs only when `wal_archive.enabled` and a target has a
    /// `wal_archive.database_url`).
    wal_guard: Arc<crate::workflow::wal_guard::WalGuard>,
}

impl Application {
    /// Opens and migrates the store, and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        crate::install_crypto_provider();
        // Credentials first: a malformed or unreadable one stops start-up before anything binds.
        let auth = Arc::new(Auth::new(&settings.auth)?);
        let store = open_store(&settings).await.map_err(|source| Error::Store {
            doing: "opening the incident store",
            source,
        })?;
        let listener = TcpListener::bind(settings.server.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: settings.server.listen,
                source,
            })?;
        let mut intake = Intake::new(
            store.clone(),
            &settings.alerts.handled,
            settings.dedupe.cache_capacity,
        );
        intake = intake.with_routes(settings.routes());
        // One Kubernetes client per distinct API (usually one for the whole fleet), shared by the
        // probes, the remediators and the runbook operations.
        crate::install_crypto_provider();
        let kube = kube_client(&settings).await;
        let kubes = kube_clients(&settings, kube.clone()).await;
        let mut remediation = None;
        let engine = if settings.probes.enabled.is_empty() {
            tracing::warn!("probes.enabled is empty: incidents are recorded but not diagnosed");
            None
        } else {
            let (tx, rx) = mpsc::channel(WORK_QUEUE);
            intake = intake.with_opened_queue(tx);
            // Each target's policy: the policy file with the target's overrides. A dry-run
            // policy changes nothing, not even the S3 probe's test object: that target's
            // probes are read-only.
            let base = if settings.remediation.enabled {
                Some(load_policy(&settings)?)
            } else {
                None
            };
            let mut policies = std::collections::BTreeMap::new();
            if let Some(base) = &base {
                for t in &settings.fleet {
                    let policy = base
                        .with_overrides(&t.policy, &t.name)
                        .map_err(Error::Policy)?;
                    policies.insert(t.name.clone(), policy);
                }
            }
            let examiner = Examiner::new(Arc::new(settings.clone()), kube.clone());
            let (http, clients) = examiner.clients();
            let lanes: Vec<(String, Examiner)> = settings
                .fleet
                .iter()
                .map(|t| {
                    let own = kubes
                        .get(&t.settings.kubernetes.connection_key())
                        .cloned()
                        .flatten();
                    let read_only = policies
                        .get(&t.name)
                        .is_some_and(|p| p.dry_run)
                        .then_some(crate::probes::ReadOnly::DryRun);
                    let ex = examiner.for_target(t, own).with_read_only(read_only);
                    (t.name.clone(), ex)
                })
                .collect();
            let mut engine = Engine::new(store.clone(), examiner).with_intake_pace(intake.pace());
            for (name, ex) in lanes {
                engine = engine.with_examiner(&name, ex);
            }
            // Incidents routed to no target are escalated whether or not remediation is on.
            let waker = Arc::new(tokio::sync::Notify::new());
            let unrouted = Remediator::new(
                store.clone(),
                Arc::new(settings.clone()),
                Arc::new(base.clone().unwrap_or_else(Policy::builtin)),
                None,
                engine.holder().to_owned(),
            )
            .for_target(crate::metrics::NO_TARGET)
            .with_waker(waker.clone());
            engine = engine.with_unrouted(Arc::new(unrouted));
            if base.is_some() {
                for t in &settings.fleet {
                    let Some(policy) = policies.remove(&t.name) else {
                        continue;
                    };
                    if policy.dry_run {
                        tracing::warn!(target_name = %t.name, policy = %policy.source, "remediation runs in DRY-RUN mode: plans are recorded, nothing is changed");
                    }
                    let own = kubes
                        .get(&t.settings.kubernetes.connection_key())
                        .cloned()
                        .flatten();
                    let remediator = Remediator::new(
                        store.clone(),
                        t.settings.clone(),
                        Arc::new(policy),
                        own,
                        engine.holder().to_owned(),
                    )
                    .for_target(&t.name)
                    .with_waker(waker.clone())
                    .with_clients(http.clone(), clients.clone());
                    engine = engine.with_remediator(Arc::new(remediator));
                }
                remediation = Some(waker);
            }
            Some((Arc::new(engine), rx))
        };
        let intake = Arc::new(intake);
        let watchdog = Arc::new(crate::workflow::watchdog::Watchdog::new(
            Arc::new(settings.clone()),
            store.clone(),
            intake.clone(),
            kube.clone(),
        ));
        let wal_guard = Arc::new(crate::workflow::wal_guard::WalGuard::new(
            Arc::new(settings.clone()),
            store.clone(),
            intake.clone(),
        ));
        let runbooks = Arc::new(runbook_fleet(&settings, &store, &kubes));
        // A superuser scratch role stops start-up, naming the key (restore_test.allow_superuser);
        // a scratch server that does not answer now is checked again before each test.
        for name in settings.target_names() {
            let Ok(runbook) = runbooks.pick(Some(&name)) else {
                continue;
            };
            match runbook.restore.refuse_superuser().await {
                Err(e @ StartError::Superuser { .. }) => return Err(Error::RestoreTest(e)),
                Err(e) => {
                    tracing::warn!(target_name = %name, error = %e, "the restore-test role could not be checked at start-up")
                }
                Ok(()) => {}
            }
        }
        // The pages sign their sessions with a key derived from the installation key, which
        // every replica reads from the store.
        let installation_key = store
            .installation_key(&hex::encode(rand::random::<[u8; 32]>()))
            .await
            .map_err(|source| Error::Store {
                doing: "reading the installation key",
                source,
            })?;
        let pages = api::ui::PageSettings {
            key: api::ui::session::SessionKey::derive(&installation_key),
            secure_cookie: !settings.server.listen.ip().is_loopback(),
            rpo_hours: settings.notify.rpo_hours,
        };
        let state = AppState::new(api::Shared {
            pages,
            store,
            intake,
            auth,
            metrics: telemetry::metrics_handle(),
            body_limit: settings.server.body_limit_bytes,
            body_timeout: Duration::from_millis(settings.server.body_timeout_ms),
            databases: runbooks.databases(),
            targets: settings.target_names(),
            approvals: remediation,
            runbooks,
            slack: Arc::new(crate::api::slack::SlackApprovals::from_settings(
                &settings.notify,
            )),
        });
        Ok(Self {
            listener,
            state,
            settings,
            engine,
            clock: Arc::new(crate::workflow::notify::SystemClock),
            watchdog,
            wal_guard,
        })
    }

    /// The freshness watchdog (tests check a chosen period with it).
    pub fn watchdog(&self) -> Arc<crate::workflow::watchdog::Watchdog> {
        self.watchdog.clone()
    }

    /// The WAL-archive guard (tests check it at a chosen time).
    pub fn wal_guard(&self) -> Arc<crate::workflow::wal_guard::WalGuard> {
        self.wal_guard.clone()
    }

    /// Replaces the notifier's clock (tests drive the escalation deadline with a fake time).
    pub fn with_clock(mut self, clock: Arc<dyn crate::workflow::notify::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.settings.server.listen)
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (up to the configured grace), writes pending counts and closes the store.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let Application {
            listener,
            state,
            settings,
            engine,
            clock,
            watchdog,
            wal_guard,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let engine_task =
            engine.map(|(engine, queue)| tokio::spawn(engine.run(queue, stop_rx.clone())));
        let restore_schedule = tokio::spawn(state.runbooks.clone().run_schedule(stop_rx.clone()));
        let watchdog_task = tokio::spawn(watchdog.run(stop_rx.clone()));
        let wal_guard_task = tokio::spawn(wal_guard.run(stop_rx.clone()));
        let notifier =
            crate::workflow::notify::Notifier::new(state.store.clone(), &settings, clock);
        let notifier_task = tokio::spawn(notifier.run(stop_rx.clone()));
        let auth_watch = tokio::spawn(state.auth.clone().watch(stop_rx.clone()));
        let flusher = tokio::spawn(state.intake.clone().run_flusher(
            Duration::from_millis(settings.dedupe.flush_interval_ms),
            stop_rx,
        ));
        let store = state.store.clone();
        let addr = listener.local_addr().ok();
        tracing::info!(
            ?addr,
            store = store.backend(),
            "backup-remediator listening"
        );

        let (signalled_tx, mut signalled_rx) = watch::channel(false);
        let limits = api::server::ConnectionLimits {
            header_read_timeout: Duration::from_millis(settings.server.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(settings.server.idle_timeout_ms),
            max_connections: settings.server.max_connections,
        };
        let server = api::server::serve(listener, api::app(state), limits, async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            let _ = signalled_tx.send(true);
        });
        let grace = Duration::from_secs(settings.server.shutdown_grace_seconds);
        let result = tokio::select! {
            r = server => r.map_err(|source| Error::Serve { source }),
            _ = async {
                let _ = signalled_rx.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_seconds = grace.as_secs(), "requests still running after the grace period; stopping");
                Ok(())
            }
        };
        let _ = stop_tx.send(true);
        let _ = flusher.await;
        let _ = auth_watch.await;
        restore_schedule.abort();
        watchdog_task.abort();
        wal_guard_task.abort();
        let _ = notifier_task.await;
        if let Some(task) = engine_task {
            let _ = task.await;
        }
        store.close().await;
        tracing::info!("stopped");
        result
    }
}

/// The restore testers and manual backup launchers of every target, sharing the Kubernetes
/// clients (one per distinct API).
pub async fn runbook_operations(
    settings: &Settings,
    store: &Store,
) -> Arc<crate::runbook::fleet::RunbookFleet> {
    let kubes = kube_clients(settings, kube_client(settings).await).await;
    Arc::new(runbook_fleet(settings, store, &kubes))
}

/// Every target's restore tester and manual backup launcher, each with its target's Kubernetes
/// client and its policy's manual backup budget.
fn runbook_fleet(
    settings: &Settings,
    store: &Store,
    kubes: &std::collections::HashMap<String, Option<kube::Client>>,
) -> crate::runbook::fleet::RunbookFleet {
    let base = load_policy(settings).unwrap_or_else(|_| Policy::builtin());
    crate::runbook::fleet::RunbookFleet::new(
        settings,
        store,
        |t| {
            kubes
                .get(&t.settings.kubernetes.connection_key())
                .cloned()
                .flatten()
        },
        |t| {
            base.with_overrides(&t.policy, &t.name)
                .unwrap_or_else(|_| base.clone())
                .manual_backups
        },
    )
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
