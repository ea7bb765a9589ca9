//! Building and running the service: store, intake, HTTP server, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{self, AppState, Auth};
use crate::config::Settings;
use crate::intake::Intake;
use crate::store::{Store, StoreError, StoreOptions};
use crate::telemetry;
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

/// A bound, ready-to-run service.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    settings: Settings,
}

impl Application {
    /// Opens and migrates the store, and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, Error> {
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
        let intake = Intake::new(
            store.clone(),
            &settings.alerts.handled,
            settings.dedupe.cache_capacity,
        );
        let state = AppState {
            store,
            intake: Arc::new(intake),
            auth: Arc::new(Auth::from_settings(&settings.auth)),
            metrics: telemetry::metrics_handle(),
            body_limit: settings.server.body_limit_bytes,
        };
        Ok(Self {
            listener,
            state,
            settings,
        })
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
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
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
        let server = axum::serve(listener, api::app(state)).with_graceful_shutdown(async move {
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
        store.close().await;
        tracing::info!("stopped");
        result
    }
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
