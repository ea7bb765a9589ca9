//! backup-remediator: turns the "PostgreSQL backup failed" runbook into a service. Alertmanager
//! posts the alert; the service records an incident, diagnoses, remediates what policy allows,
//! and escalates the rest.

pub mod actions;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod infra;
pub mod metrics;
pub mod probes;
pub mod runbook;
pub mod store;
pub mod workflow;

use std::net::SocketAddr;

/// The crate's top-level error: what failed, and what the service was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Policy(#[from] domain::policy::PolicyError),
    #[error("{doing}: {source}")]
    Store {
        doing: &'static str,
        #[source]
        source: store::StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The restore tests' configuration is refused (a superuser `restore_test.target_url`).
    #[error(transparent)]
    RestoreTest(runbook::restore::StartError),
    #[error("the HTTP server failed: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

/// Installs ring as the process's rustls crypto provider. kube, reqwest, sqlx and the AWS SDK all
/// use rustls; with one provider installed explicitly none of them has to guess. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
