//! SQLite's connections: one writer and a few readers, over a file in WAL mode.
//!
//! SQLite lets one connection write at a time. With a pool of equal connections, two deferred
//! transactions that each read and then write deadlock: the second cannot upgrade its read lock
//! while the first holds the write lock, and SQLite answers `database is locked` (SQLITE_BUSY) at
//! once, without waiting out the busy timeout. Under load that lost engine and notifier work.
//! So every write of this process goes through a single writer connection (its pool queues the
//! callers, fairly), every transaction on it begins `IMMEDIATE` (it takes the write lock at BEGIN,
//! so it never has to upgrade — which also keeps a second process on the same file, a CLI
//! command, from deadlocking with it: it waits out the busy timeout instead), and plain reads use
//! the reader connections, which WAL lets run alongside the writer.

use std::time::Duration;

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Transaction;

use super::{classify, StoreError, StoreOptions};

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Most reader connections, whatever `database.max_connections` says: each keeps a page cache and
/// a statement cache, and SQLite reads are fast enough that more buy nothing but memory.
const MAX_READERS: u32 = 4;

/// Page cache of a reader, in KiB (SQLite's default is 2000 per connection). Readers look up
/// single incidents by key; the operating system's file cache holds the rest.
const READER_CACHE_KIB: u32 = 512;

/// The one writer connection: statements run on its pool (one connection, callers queue fairly),
/// transactions begin `IMMEDIATE` through [`Writer::begin`].
#[derive(Debug, Clone)]
pub(super) struct Writer(SqlitePool);

impl Writer {
    /// Begins an `IMMEDIATE` transaction on the writer connection.
    pub(super) async fn begin(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.0.begin_with("BEGIN IMMEDIATE").await
    }

    /// The writer's pool: single statements and migrations run on it.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.0
    }
}

/// Opens the writer (creating the file, switching it to WAL) and then the readers.
pub(super) async fn open(
    path: &std::path::Path,
    opts: &StoreOptions,
) -> Result<(Writer, SqlitePool), StoreError> {
    let base = SqliteConnectOptions::new()
        .filename(path)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        // A queue of writers is normal under load: wait as long as the store's acquire
        // timeout allows, then answer "unavailable" (the webhook's 503, so Alertmanager retries).
        .acquire_timeout(opts.acquire_timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(
            base.clone()
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await
        .map_err(classify)?;
    let readers = SqlitePoolOptions::new()
        .max_connections(opts.max_connections.saturating_sub(1).clamp(1, MAX_READERS))
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(
            base.read_only(true)
                .pragma("cache_size", format!("-{READER_CACHE_KIB}")),
        )
        .await
        .map_err(classify)?;
    Ok((Writer(writer), readers))
}
