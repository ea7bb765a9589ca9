//! The freshness watchdog's periods (one row per period, taken by one replica) and the live
//! incident of an alert it looks for.

use chrono::{DateTime, Utc};

use super::codec::Json;
use super::{Store, StoreError};

impl Store {
    /// Takes `period` for `holder`: `true` for the one replica that inserted its row.
    pub async fn claim_watchdog_period(
        &self,
        period: DateTime<Utc>,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let done = self
            .writer()
            .query(
                "INSERT INTO watchdog_periods (period, holder, started_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(period)
            .bind(holder)
            .bind(Utc::now())
            .execute()
            .await?;
        Ok(done == 1)
    }

    /// Records what the check of `period` found.
    pub async fn finish_watchdog_period(
        &self,
        period: DateTime<Utc>,
        findings: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.writer()
            .query("UPDATE watchdog_periods SET finished_at = $1, findings = $2 WHERE period = $3")
            .bind(Utc::now())
            .bind(Json(findings))
            .bind(period)
            .execute()
            .await?;
        Ok(())
    }

    /// The newest incident of alert `fingerprint` that is open or escalated: (id, starts_at).
    pub async fn live_incident(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(i64, DateTime<Utc>)>, StoreError> {
        let row = self
            .writer()
            .query(
                "SELECT id, starts_at FROM incidents WHERE fingerprint = $1 \
                 AND status IN ('open', 'escalated') ORDER BY id DESC LIMIT 1",
            )
            .bind(fingerprint)
            .fetch_optional()
            .await?;
        row.map(|r| Ok((r.get("id")?, r.get("starts_at")?)))
            .transpose()
    }
}
