//! The store's interface for the freshness watchdog (the SQL is in `watchdog_queries.rs`,
//! shared by both backends): one row per period, and the live incident of an alert.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

impl Store {
    /// Takes `period` for `holder`: `true` for the one replica that inserted its row.
    pub async fn claim_watchdog_period(
        &self,
        period: DateTime<Utc>,
        holder: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.claim_watchdog_period(period, holder, Utc::now()).await)
    }

    /// Records what the check of `period` found.
    pub async fn finish_watchdog_period(
        &self,
        period: DateTime<Utc>,
        findings: &serde_json::Value,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.finish_watchdog_period(period, Utc::now(), findings).await)
    }

    /// The newest incident of alert `fingerprint` that is open or escalated: (id, starts_at).
    pub async fn live_incident(
        &self,
        fingerprint: &str,
    ) -> Result<Option<(i64, DateTime<Utc>)>, StoreError> {
        dispatch!(self, s => s.live_incident(fingerprint).await)
    }
}
