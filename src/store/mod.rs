//! The incident store: one interface, [`Store`], on PostgreSQL (production, shared by replicas) or
//! on an embedded SQLite file (a bare machine). SQL lives in this module and nowhere else.
//!
//! One file per aggregate, each with its SQL written once for both backends through
//! `query` and `codec`: `incidents` (incidents, timeline, findings, diagnosis), `plans` and
//! `gate` (steps, claims, target locks, cooldown, budget), `outbox` (notifications), `runbook`
//! (restore tests, manual backups), `watchdog` (periods). `postgres` and `sqlite` hold only what
//! must differ: connecting, migrating, and the alert write path (opening incidents one by one
//! or batched, the re-send counts), whose statements differ.
//!
//! This file: the error type, connecting, and the store-wide calls.

mod codec;
mod condition;
mod escalations;
mod gate;
mod group_commit;
mod incidents;
mod outbox;
mod plans;
mod postgres;
mod query;
mod runbook;
mod sqlite;
mod sqlite_pools;
mod watchdog;

use std::path::Path;
use std::time::Duration;

pub use condition::StoreCondition;
pub use group_commit::GroupCommit;
pub use incidents::{IncidentFilter, Opened, Renotified, Resolution};
pub use outbox::{Attempt, Delivery, DeliveryRecord, NewDelivery, NotifyState};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use query::{Conn, Dialect, Tx};

/// A store failure. [`StoreError::is_unavailable`] tells a caller whether retrying later can help.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's condition, not the request's fault (see [`StoreCondition`]): answer 503.
    #[error("the incident store is unavailable ({0}): {1}")]
    Unavailable(StoreCondition, #[source] sqlx::Error),
    #[error("an incident store query failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("the store holds a value this version cannot read: {0}")]
    Corrupt(String),
}

impl From<crate::domain::names::UnknownName> for StoreError {
    fn from(e: crate::domain::names::UnknownName) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl StoreError {
    /// True when the error is the store's condition (down, read-only, full, busy, a conflict…):
    /// the caller should answer 503, and a retry can succeed.
    pub fn is_unavailable(&self) -> bool {
        self.condition().is_some()
    }

    /// The store's condition behind this error; `None` when the request itself was refused.
    pub fn condition(&self) -> Option<StoreCondition> {
        match self {
            StoreError::Unavailable(c, _) => Some(*c),
            _ => None,
        }
    }
}

/// Sorts a sqlx error into "the store's condition" (see [`condition`]) and "this query failed".
pub(crate) fn classify(err: sqlx::Error) -> StoreError {
    match condition::condition(&err) {
        Some(c) => StoreError::Unavailable(c, err),
        None => StoreError::Query(err),
    }
}

/// A stored value this version cannot read.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

/// The incident store, on PostgreSQL or SQLite.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite:…`), or to the SQLite file at `sqlite_path`
    /// when `url` is empty. Does not migrate.
    pub async fn connect(
        url: &str,
        sqlite_path: &Path,
        opts: &StoreOptions,
    ) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(PgStore::connect(url, opts).await?))
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            Ok(Store::Sqlite(
                SqliteStore::open(Path::new(path), opts).await?,
            ))
        } else if url.is_empty() {
            Ok(Store::Sqlite(SqliteStore::open(sqlite_path, opts).await?))
        } else {
            Err(StoreError::Url(
                "expected postgres://, postgresql:// or sqlite:".into(),
            ))
        }
    }

    /// Which backend, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Postgres(_) => "postgres",
            Store::Sqlite(_) => "sqlite",
        }
    }

    /// Applies the pending migrations of this backend.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.migrate().await,
            Store::Sqlite(s) => s.migrate().await,
        }
    }

    /// Cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.reader().query("SELECT 1").execute().await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Store::Postgres(s) => s.close().await,
            Store::Sqlite(s) => s.close().await,
        }
    }

    /// The per-installation key (stores `fresh` if there is none yet): the first process to ask
    /// stores it, later ones read it.
    pub async fn installation_key(&self, fresh: &str) -> Result<String, StoreError> {
        self.writer()
            .query("INSERT INTO installation (id, fingerprint_key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(fresh)
            .execute()
            .await?;
        self.writer()
            .query("SELECT fingerprint_key FROM installation WHERE id = 1")
            .fetch_scalar()
            .await
    }

    // ---- Where statements run (used by the aggregates) ----

    /// Where writes run, and reads that precede a write (on SQLite, the one writer connection).
    fn writer(&self) -> Conn<'_> {
        match self {
            Store::Postgres(s) => Conn::Pg(&s.pool),
            Store::Sqlite(s) => Conn::Lite(s.writer.pool()),
        }
    }

    /// Where plain reads run (on SQLite, the reader connections, alongside the writer).
    fn reader(&self) -> Conn<'_> {
        match self {
            Store::Postgres(s) => Conn::Pg(&s.pool),
            Store::Sqlite(s) => Conn::Lite(&s.readers),
        }
    }

    /// Begins a transaction on the writer.
    async fn begin(&self) -> Result<Tx, StoreError> {
        match self {
            Store::Postgres(s) => s.pool.begin().await.map(Tx::Pg),
            Store::Sqlite(s) => s.writer.begin().await.map(Tx::Lite),
        }
        .map_err(classify)
    }

    /// This backend's SQL fragments.
    fn dialect(&self) -> Dialect {
        match self {
            Store::Postgres(_) => Dialect::Postgres,
            Store::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// Seconds of a lease or window, as the database binds them.
fn seconds(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}
