//! backup-remediator: turns the "PostgreSQL backup failed" runbook into a service. Alertmanager
//! posts the alert; the service records an incident, diagnoses, remediates what policy allows,
//! and escalates the rest.

pub mod alert;
pub mod api;
pub mod config;
pub mod incident;
pub mod intake;
pub mod startup;
pub mod store;
pub mod telemetry;

use std::net::SocketAddr;

/// The crate's top-level error: what failed, and what the service was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
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
    #[error("the HTTP server failed: {source}")]
    Serve {
        #[source]
        source: std::io::Error,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
