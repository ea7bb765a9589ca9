//! The PostgreSQL backend: production, and the one several replicas share. Connecting,
//! migrating, and the incident write path where PostgreSQL's SQL differs from SQLite's: the
//! alert insert as one statement (and batched with `UNNEST`), and the re-send counts batched with
//! `UNNEST`.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;

use super::{classify, Opened, Renotified, StoreError, StoreOptions};
use crate::domain::incident::NewIncident;

/// Opens an incident with its `opened` event in one atomic statement; no row when the alert's
/// incident already exists. The load benchmark runs this same statement through pgbench.
pub const OPEN_INCIDENT: &str = "WITH i AS (\
     INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, \
     annotations, generator_url, opened_at, updated_at, last_seen_at, target) \
     VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $8, $8, $10) \
     ON CONFLICT ON CONSTRAINT incidents_alert_key DO NOTHING RETURNING id) \
     INSERT INTO incident_events (incident_id, at, kind, detail) \
     SELECT id, $8, 'opened', $9 FROM i RETURNING incident_id";

/// [`OPEN_INCIDENT`] for a batch of alerts (group commit): one statement, so one round trip and
/// one commit for all of them. Returns, per input row in order, the new incident's id, or NULL
/// where the alert's incident already existed.
const OPEN_INCIDENTS: &str = "WITH input AS (\
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::text[]) WITH ORDINALITY \
     AS t(fingerprint, alertname, starts_at, severity, labels, annotations, generator_url, \
     opened_at, detail, target, n)), \
     i AS (INSERT INTO incidents (fingerprint, alertname, starts_at, status, severity, labels, \
     annotations, generator_url, opened_at, updated_at, last_seen_at, target) \
     SELECT fingerprint, alertname, starts_at, 'open', severity, labels::jsonb, \
     annotations::jsonb, generator_url, opened_at, opened_at, opened_at, target FROM input ORDER BY n \
     ON CONFLICT ON CONSTRAINT incidents_alert_key DO NOTHING \
     RETURNING id, fingerprint, starts_at), \
     e AS (INSERT INTO incident_events (incident_id, at, kind, detail) \
     SELECT i.id, input.opened_at, 'opened', input.detail::jsonb FROM i JOIN input \
     ON input.fingerprint = i.fingerprint AND input.starts_at = i.starts_at ORDER BY input.n) \
     SELECT i.id FROM input LEFT JOIN i \
     ON input.fingerprint = i.fingerprint AND input.starts_at = i.starts_at ORDER BY input.n";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Incidents in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Self, StoreError> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Url(e.to_string()))?;
        let connect = connect.application_name("backup-remediator");
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(classify)?;
        Ok(Self { pool })
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn open_incident(&self, new: &NewIncident) -> Result<Opened, StoreError> {
        // One statement, so one round trip: the incident and its `opened` event are inserted
        // together or not at all (a statement is atomic), and a conflicting insert adds neither.
        let created: Option<i64> = sqlx::query_scalar(OPEN_INCIDENT)
            .bind(&new.fingerprint)
            .bind(&new.alertname)
            .bind(new.starts_at)
            .bind(&new.severity)
            .bind(Json(&new.labels))
            .bind(Json(&new.annotations))
            .bind(&new.generator_url)
            .bind(new.opened_at)
            .bind(Json(&new.detail))
            .bind(&new.target)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        match created {
            Some(id) => Ok(Opened::Created(id)),
            // Another request or replica inserted it; its row is committed (ON CONFLICT waited).
            None => self
                .incident_id(&new.fingerprint, new.starts_at)
                .await
                .map(Opened::Existing),
        }
    }

    /// Several alerts' incidents in one statement; the alerts must be distinct.
    pub(super) async fn open_incidents(
        &self,
        news: &[&NewIncident],
    ) -> Result<Vec<Opened>, StoreError> {
        let col = |f: fn(&NewIncident) -> String| news.iter().map(|n| f(n)).collect::<Vec<_>>();
        let time =
            |f: fn(&NewIncident) -> DateTime<Utc>| news.iter().map(|n| f(n)).collect::<Vec<_>>();
        let ids: Vec<Option<i64>> = sqlx::query_scalar(OPEN_INCIDENTS)
            .bind(col(|n| n.fingerprint.clone()))
            .bind(col(|n| n.alertname.clone()))
            .bind(time(|n| n.starts_at))
            .bind(col(|n| n.severity.clone()))
            .bind(col(|n| n.labels.to_string()))
            .bind(col(|n| n.annotations.to_string()))
            .bind(col(|n| n.generator_url.clone()))
            .bind(time(|n| n.opened_at))
            .bind(col(|n| n.detail.to_string()))
            .bind(news.iter().map(|n| n.target.clone()).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        if ids.len() != news.len() {
            return Err(StoreError::Corrupt(format!(
                "the batch insert answered {} rows for {} alerts",
                ids.len(),
                news.len()
            )));
        }
        let mut out = Vec::with_capacity(news.len());
        for (new, id) in news.iter().zip(ids) {
            out.push(match id {
                Some(id) => Opened::Created(id),
                // Opened before (by another request or replica): its row is committed.
                None => Opened::Existing(self.incident_id(&new.fingerprint, new.starts_at).await?),
            });
        }
        Ok(out)
    }

    async fn incident_id(
        &self,
        fingerprint: &str,
        starts_at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT id FROM incidents WHERE fingerprint = $1 AND starts_at = $2")
            .bind(fingerprint)
            .bind(starts_at)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)
    }

    pub(super) async fn record_renotifications(
        &self,
        batch: &[Renotified],
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = batch.iter().map(|r| r.incident_id).collect();
        let counts: Vec<i64> = batch.iter().map(|r| r.count).collect();
        let seen: Vec<DateTime<Utc>> = batch.iter().map(|r| r.last_seen_at).collect();
        sqlx::query(
            "UPDATE incidents AS i SET renotified_count = i.renotified_count + b.count, \
             last_seen_at = GREATEST(i.last_seen_at, b.seen) \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::timestamptz[]) AS b(id, count, seen) \
             WHERE i.id = b.id",
        )
        .bind(ids)
        .bind(counts)
        .bind(seen)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}
