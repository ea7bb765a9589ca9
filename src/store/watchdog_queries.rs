// The freshness watchdog's SQL, shared verbatim by the PostgreSQL and SQLite stores (included
// into each module, like runbook_queries.rs): each backend supplies `t` / `j` / `get_t` and
// `This`.

impl This {
/// Inserts the row of `period` for `holder`; `false` when another replica has it already.
pub(super) async fn claim_watchdog_period(
    &self,
    period: DateTime<Utc>,
    holder: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO watchdog_periods (period, holder, started_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(t(period))
    .bind(holder)
    .bind(t(now))
    .execute(&self.pool)
    .await
    .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

/// Stores what the check of `period` found.
pub(super) async fn finish_watchdog_period(
    &self,
    period: DateTime<Utc>,
    now: DateTime<Utc>,
    findings: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE watchdog_periods SET finished_at = $1, findings = $2 WHERE period = $3")
        .bind(t(now))
        .bind(j(findings))
        .bind(t(period))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
    Ok(())
}

/// The newest incident of alert `fingerprint` still open or escalated: (id, starts_at).
pub(super) async fn live_incident(
    &self,
    fingerprint: &str,
) -> Result<Option<(i64, DateTime<Utc>)>, StoreError> {
    let row = sqlx::query(
        "SELECT id, starts_at FROM incidents WHERE fingerprint = $1 \
         AND status IN ('open', 'escalated') ORDER BY id DESC LIMIT 1",
    )
    .bind(fingerprint)
    .fetch_optional(&self.pool)
    .await
    .map_err(classify)?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some((r.try_get("id").map_err(classify)?, get_t(&r, "starts_at")?))),
    }
}
}
