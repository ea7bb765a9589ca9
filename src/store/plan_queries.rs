// Remediation queries, shared verbatim by the PostgreSQL and SQLite stores (included into each
// `impl`). The SQL is the common subset of both dialects; placeholders are numbered and first
// appear in ascending order. Each store module supplies `t` / `j` (bind a time / JSON value) and
// `get_t` / `get_ot` (read them back), which is where the two backends differ, and `This`, the
// store type.

impl This {
/// Stores the plan and a `planned` event in one transaction. `false` if the incident already
/// has a plan (another process made it first).
pub(super) async fn save_plan(
    &self,
    incident_id: i64,
    steps: &[PlannedStep],
    detail: &serde_json::Value,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut tx = self.pool.begin().await.map_err(classify)?;
    let existing: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM plan_steps WHERE incident_id = $1")
            .bind(incident_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
    if existing > 0 {
        return Ok(false);
    }
    for (seq, s) in steps.iter().enumerate() {
        let inserted = sqlx::query(
            "INSERT INTO plan_steps (incident_id, seq, attempt_group, kind, name, target, decision, state, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'planned', $8) ON CONFLICT DO NOTHING",
        )
        .bind(incident_id)
        .bind(seq as i32 + 1)
        .bind(s.group)
        .bind(s.kind.as_str())
        .bind(s.name.as_str())
        .bind(&s.target)
        .bind(s.decision.as_str())
        .bind(&s.reason)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if inserted.rows_affected() == 0 {
            // A concurrent plan won the unique (incident_id, seq): keep theirs.
            return Ok(false);
        }
    }
    sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, 'planned', $3)")
        .bind(incident_id)
        .bind(t(at))
        .bind(j(detail))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    Ok(true)
}

/// The incident's plan, in order.
pub(super) async fn steps(&self, incident_id: i64) -> Result<Vec<Step>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, incident_id, seq, attempt_group, kind, name, target, decision, state, reason, output, \
         decided_by, decided_at, started_at, finished_at FROM plan_steps WHERE incident_id = $1 ORDER BY seq",
    )
    .bind(incident_id)
    .fetch_all(&self.pool)
    .await
    .map_err(classify)?;
    rows.iter().map(step_row).collect()
}

/// Applies `tr` if the step is still in one of `tr.from`, with its timeline event, in one
/// transaction. `false` when the step had moved on (someone else got there first).
pub(super) async fn transition(
    &self,
    tr: &Transition<'_>,
    detail: &serde_json::Value,
) -> Result<bool, StoreError> {
    let mut tx = self.pool.begin().await.map_err(classify)?;
    let current: Option<(i64, String)> =
        sqlx::query_as("SELECT incident_id, state FROM plan_steps WHERE id = $1")
            .bind(tr.step_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
    let Some((incident_id, state)) = current else {
        return Ok(false);
    };
    if !tr.from.iter().any(|s| s.as_str() == state) {
        return Ok(false);
    }
    let started = tr.to == StepState::Running;
    let finished = tr.to.is_final();
    let updated = sqlx::query(
        "UPDATE plan_steps SET state = $1, \
           reason = CASE WHEN $2 = '' THEN reason ELSE $2 END, \
           output = COALESCE($3, output), \
           decided_by = COALESCE($4, decided_by), \
           decided_at = CASE WHEN $4 IS NULL THEN decided_at ELSE $5 END, \
           started_at = CASE WHEN $6 THEN $5 ELSE started_at END, \
           finished_at = CASE WHEN $7 THEN $5 ELSE finished_at END \
         WHERE id = $8 AND state = $9 \
         AND ($10 IS NULL OR EXISTS (SELECT 1 FROM incidents i WHERE i.id = plan_steps.incident_id \
              AND i.claimed_by = $10 AND i.claim_epoch = $11))",
    )
    .bind(tr.to.as_str())
    .bind(tr.reason)
    .bind(tr.output.map(j))
    .bind(tr.decided_by)
    .bind(t(tr.at))
    .bind(started)
    .bind(finished)
    .bind(tr.step_id)
    .bind(&state)
    .bind(tr.fence.map(|c| c.holder.as_str()))
    .bind(tr.fence.map_or(0, |c| c.epoch))
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(incident_id)
        .bind(t(tr.at))
        .bind(tr.event)
        .bind(j(detail))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    Ok(true)
}

/// Gives up the claim (if still ours); `work_done` also marks the incident as needing no more
/// work from any process.
pub(super) async fn release(
    &self,
    incident_id: i64,
    holder: &str,
    work_done: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE incidents SET claimed_by = NULL, claim_expires_at = NULL, \
         work_done_at = COALESCE($1, work_done_at) WHERE id = $2 AND claimed_by = $3",
    )
    .bind(work_done.map(t))
    .bind(incident_id)
    .bind(holder)
    .execute(&self.pool)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Open incidents that need work and that no live claim holds, oldest first.
pub(super) async fn claimable(
    &self,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    sqlx::query_as(
        "SELECT id, alertname FROM incidents WHERE status = 'open' AND work_done_at IS NULL \
         AND (claimed_by IS NULL OR claim_expires_at < $1) ORDER BY id LIMIT $2",
    )
    .bind(t(now))
    .bind(limit)
    .fetch_all(&self.pool)
    .await
    .map_err(classify)
}

/// Moves an open incident to `status` with its event; `false` if it was no longer open.
pub(super) async fn settle(
    &self,
    incident_id: i64,
    status: IncidentStatus,
    at: DateTime<Utc>,
    detail: &serde_json::Value,
) -> Result<bool, StoreError> {
    let mut tx = self.pool.begin().await.map_err(classify)?;
    let done = sqlx::query(
        "UPDATE incidents SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'open'",
    )
    .bind(status.as_str())
    .bind(t(at))
    .bind(incident_id)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(incident_id)
        .bind(t(at))
        .bind(status.as_str())
        .bind(j(detail))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    tx.commit().await.map_err(classify)?;
    Ok(true)
}

pub(super) async fn unlock_target(&self, target: &str, incident_id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM target_locks WHERE target = $1 AND incident_id = $2")
        .bind(target)
        .bind(incident_id)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
    Ok(())
}
}
