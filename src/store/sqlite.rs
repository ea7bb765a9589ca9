//! The SQLite backend: the default on a bare machine, one process at a time. Writes go through
//! one writer connection, reads through a few readers (see `sqlite_pools`). Opening the file,
//! migrating, and the incident write path where SQLite's SQL differs from PostgreSQL's: the
//! alert inserts and re-send counts one statement at a time in the writer's transaction.

use std::path::Path;

use sqlx::sqlite::SqlitePool;

use super::codec::sqlite_time as ts;
use super::sqlite_pools::{self, Writer};
use super::{classify, Opened, Renotified, StoreError, StoreOptions};
use crate::domain::incident::NewIncident;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Incidents in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The one writer connection: every write, and the reads that precede a write.
    pub(super) writer: Writer,
    /// The readers, for plain reads (the API, the engine's look-ups).
    pub(super) readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the database file at `path`.
    pub async fn open(path: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| classify(sqlx::Error::Io(e)))?;
        }
        let (writer, readers) = sqlite_pools::open(path, opts).await?;
        Ok(Self { writer, readers })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(self.writer.pool()).await?;
        Ok(())
    }

    pub(super) async fn open_incident(&self, new: &NewIncident) -> Result<Opened, StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        let opened = open_in(&mut tx, new).await?;
        tx.commit().await.map_err(classify)?;
        Ok(opened)
    }

    /// Several alerts' incidents in one transaction (group commit).
    pub(super) async fn open_incidents(
        &self,
        news: &[&NewIncident],
    ) -> Result<Vec<Opened>, StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        let mut out = Vec::with_capacity(news.len());
        for new in news {
            out.push(open_in(&mut tx, new).await?);
        }
        tx.commit().await.map_err(classify)?;
        Ok(out)
    }

    pub(super) async fn record_renotifications(
        &self,
        batch: &[Renotified],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(classify)?;
        for r in batch {
            sqlx::query(
                "UPDATE incidents SET renotified_count = renotified_count + ?2, \
                 last_seen_at = MAX(last_seen_at, ?3) WHERE id = ?1",
            )
            .bind(r.incident_id)
            .bind(r.count)
            .bind(ts(r.last_seen_at))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    pub(super) async fn close(&self) {
        self.readers.close().await;
        self.writer.pool().close().await;
    }
}

/// Opens one alert's incident inside the writer's transaction `tx`.
async fn open_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    new: &NewIncident,
) -> Result<Opened, StoreError> {
    let opened_at = ts(new.opened_at);
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, \
         annotations, generator_url, opened_at, updated_at, last_seen_at, target) \
         VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?7, ?8, ?8, ?8, ?9) \
         ON CONFLICT (fingerprint, starts_at) DO NOTHING RETURNING id",
    )
    .bind(&new.fingerprint)
    .bind(&new.alertname)
    .bind(ts(new.starts_at))
    .bind(&new.severity)
    .bind(new.labels.to_string())
    .bind(new.annotations.to_string())
    .bind(&new.generator_url)
    .bind(&opened_at)
    .bind(&new.target)
    .fetch_optional(&mut **tx)
    .await
    .map_err(classify)?;
    let opened = match created {
        Some(id) => {
            sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?1, ?2, 'opened', ?3)")
                .bind(id)
                .bind(&opened_at)
                .bind(new.detail.to_string())
                .execute(&mut **tx)
                .await
                .map_err(classify)?;
            Opened::Created(id)
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "SELECT id FROM incidents WHERE fingerprint = ?1 AND starts_at = ?2",
            )
            .bind(&new.fingerprint)
            .bind(ts(new.starts_at))
            .fetch_one(&mut **tx)
            .await
            .map_err(classify)?;
            Opened::Existing(id)
        }
    };
    Ok(opened)
}
