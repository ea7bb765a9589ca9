// The action gate and the claims it relies on, shared by the PostgreSQL and SQLite stores
// (included into each `impl`, like `plan_queries.rs`). Time is the DATABASE's: each backend
// supplies `DB_NOW` and `db_shift(param, sign)` (now ± a bound number of seconds), and
// `GATE_SERIALIZE`, the statement that makes gate transactions run one at a time (so that two
// replicas never both see room in the same budget). Placeholders first appear in ascending order.

impl This {
/// Claims the incident for `holder` for `lease_seconds` (database clock) unless another live
/// claim holds it; every new claim increments the claim epoch. The epoch, or `None`.
pub(super) async fn claim(
    &self,
    incident_id: i64,
    holder: &str,
    lease_seconds: i64,
) -> Result<Option<i64>, StoreError> {
    let sql = format!(
        "UPDATE incidents SET claimed_by = $1, claim_expires_at = {until}, claim_epoch = claim_epoch + 1 \
         WHERE id = $3 AND (claimed_by IS NULL OR claimed_by = $1 OR claim_expires_at < {DB_NOW}) \
         RETURNING claim_epoch",
        until = db_shift(2, '+'),
    );
    sqlx::query_scalar(&sql)
        .bind(holder)
        .bind(lease_seconds)
        .bind(incident_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
}

/// Extends `claim` by `lease_seconds` if it is still the incident's current claim.
pub(super) async fn renew_claim(
    &self,
    incident_id: i64,
    claim: &crate::domain::plan::Claim,
    lease_seconds: i64,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE incidents SET claim_expires_at = {until} \
         WHERE id = $2 AND claimed_by = $3 AND claim_epoch = $4",
        until = db_shift(1, '+'),
    );
    let done = sqlx::query(&sql)
        .bind(lease_seconds)
        .bind(incident_id)
        .bind(&claim.holder)
        .bind(claim.epoch)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

/// How many incidents of the alert `fingerprint` opened before incident `before_id` within the
/// last `window_seconds` (the flapping breaker).
pub(super) async fn recent_incidents(
    &self,
    fingerprint: &str,
    before_id: i64,
    window_seconds: i64,
) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT COUNT(*) FROM incidents WHERE fingerprint = $1 AND id < $2 AND opened_at > {since}",
        since = db_shift(3, '-'),
    );
    sqlx::query_scalar(&sql)
        .bind(fingerprint)
        .bind(before_id)
        .bind(window_seconds)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)
}

/// The installation's fingerprint key: `fresh` if none was stored yet (the first process to
/// ask stores it), else the stored one.
pub(super) async fn installation_key(&self, fresh: &str) -> Result<String, StoreError> {
    sqlx::query("INSERT INTO installation (id, fingerprint_key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
        .bind(fresh)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
    sqlx::query_scalar("SELECT fingerprint_key FROM installation WHERE id = 1")
        .fetch_one(&self.pool)
        .await
        .map_err(classify)
}

/// The action gate: in one transaction, checks that `g.claim` still holds the incident (epoch
/// and lease by the database clock), that the step is still in `g.from`, that the incident is
/// open, the policy verdict, the attempt cap, the cooldown, the budget and the target lock —
/// then moves the step to `running` with its intent and records the start. A failed check ends
/// the step (`skipped`, `dry_run`, `refused`) with its reason in the same transaction, except
/// a lost claim or a moved step (left alone) and a held lock (`Busy`, nothing written).
pub(super) async fn gate(
    &self,
    g: &crate::domain::plan::GateRequest<'_>,
) -> Result<crate::domain::plan::GateOutcome, StoreError> {
    use crate::domain::plan::{GateOutcome, Refusal, Verdict};
    let mut tx = self.pool.begin().await.map_err(classify)?;
    sqlx::query(GATE_SERIALIZE)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    let sql = format!(
        "SELECT status, claimed_by, claim_epoch, \
         CASE WHEN claim_expires_at > {DB_NOW} THEN 1 ELSE 0 END AS live FROM incidents WHERE id = $1"
    );
    let Some(row) = sqlx::query(&sql)
        .bind(g.step.incident_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?
    else {
        return Ok(GateOutcome::Lost("the incident no longer exists".to_owned()));
    };
    let status: String = row.try_get("status").map_err(classify)?;
    let holder: Option<String> = row.try_get("claimed_by").map_err(classify)?;
    let epoch: i64 = row.try_get("claim_epoch").map_err(classify)?;
    let live: i32 = row.try_get("live").map_err(classify)?;
    if holder.as_deref() != Some(g.claim.holder.as_str()) || epoch != g.claim.epoch || live == 0 {
        return Ok(GateOutcome::Lost(format!(
            "{} no longer holds the incident's claim (epoch {})",
            g.claim.holder, g.claim.epoch
        )));
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM plan_steps WHERE id = $1")
        .bind(g.step.id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
    let Some(state) = state.filter(|s| g.from.iter().any(|f| f.as_str() == s)) else {
        return Ok(GateOutcome::Lost("the step moved on".to_owned()));
    };

    let mut end: Option<(StepState, Option<Refusal>, String)> = None;
    if !g.resume {
        if status != "open" {
            let why = if status == "resolved" {
                "Alertmanager resolved the alert; the step is skipped".to_owned()
            } else {
                format!("the incident is {status}; the step is skipped")
            };
            end = Some((StepState::Skipped, None, why));
        } else {
            match g.verdict {
                Verdict::DryRun(why) => end = Some((StepState::DryRun, None, why.to_owned())),
                Verdict::Refuse(r, why) => end = Some((StepState::Refused, Some(r), why.to_owned())),
                Verdict::Run => {}
            }
        }
    }
    if end.is_none() && g.counted && !g.resume {
        end = gate_limits(&mut tx, g).await?;
    }
    if let Some((to, refusal, reason)) = end {
        let kind = match to {
            StepState::Skipped => "step_skipped",
            StepState::DryRun => "step_dry_run",
            _ => "step_refused",
        };
        let mut detail = g.detail.clone();
        detail["state"] = serde_json::json!(to);
        detail["reason"] = serde_json::json!(reason);
        if let Some(r) = refusal {
            detail["refusal"] = serde_json::json!(r);
        }
        let at = Utc::now();
        sqlx::query("UPDATE plan_steps SET state = $1, reason = $2, finished_at = $3 WHERE id = $4 AND state = $5")
            .bind(to.as_str())
            .bind(&reason)
            .bind(t(at))
            .bind(g.step.id)
            .bind(&state)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        gate_event(&mut tx, g.step.incident_id, at, kind, &detail).await?;
        tx.commit().await.map_err(classify)?;
        return Ok(GateOutcome::Ended { state: to, refusal, reason });
    }

    if g.counted {
        let sql = format!(
            "INSERT INTO target_locks (target, incident_id, holder, expires_at) VALUES ($1, $2, $3, {until}) \
             ON CONFLICT (target) DO UPDATE SET incident_id = excluded.incident_id, holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE target_locks.incident_id = excluded.incident_id OR target_locks.expires_at < {DB_NOW} \
             RETURNING target",
            until = db_shift(4, '+'),
        );
        let got: Option<String> = sqlx::query_scalar(&sql)
            .bind(&g.step.target)
            .bind(g.step.incident_id)
            .bind(&g.claim.holder)
            .bind(g.lock_seconds)
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        if got.is_none() {
            let other: Option<i64> =
                sqlx::query_scalar("SELECT incident_id FROM target_locks WHERE target = $1")
                    .bind(&g.step.target)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(classify)?;
            return Ok(GateOutcome::Busy(format!(
                "{} is being changed by incident {}",
                g.step.target,
                other.map_or_else(|| "?".to_owned(), |o| o.to_string())
            )));
        }
    }
    let sql = format!(
        "UPDATE plan_steps SET state = 'running', output = $1, \
         started_at = CASE WHEN started_at IS NULL THEN {DB_NOW} ELSE started_at END \
         WHERE id = $2 AND state = $3"
    );
    sqlx::query(&sql)
        .bind(j(g.intent))
        .bind(g.step.id)
        .bind(&state)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    if g.counted && !g.resume {
        let sql = format!(
            "INSERT INTO action_starts (action, target, incident_id, step_id, started_at) \
             VALUES ($1, $2, $3, $4, {DB_NOW})"
        );
        sqlx::query(&sql)
            .bind(g.action)
            .bind(&g.step.target)
            .bind(g.step.incident_id)
            .bind(g.step.id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
    }
    let mut detail = g.detail.clone();
    detail["state"] = serde_json::json!(StepState::Running);
    detail["output"] = g.intent.clone();
    let (kind, note) = if g.resume {
        ("step_resumed", "resumed after the process that ran it stopped")
    } else {
        ("step_started", "")
    };
    if !note.is_empty() {
        detail["reason"] = serde_json::json!(note);
    }
    gate_event(&mut tx, g.step.incident_id, Utc::now(), kind, &detail).await?;
    tx.commit().await.map_err(classify)?;
    Ok(GateOutcome::Started)
}
}

/// The gate's attempt cap, cooldown and budget, in its transaction: the refusal, if any.
async fn gate_limits(
    tx: &mut sqlx::Transaction<'_, Db>,
    g: &crate::domain::plan::GateRequest<'_>,
) -> Result<Option<(StepState, Option<crate::domain::plan::Refusal>, String)>, StoreError> {
    use crate::domain::plan::Refusal;
    let refuse = |r: Refusal, why: String| Ok(Some((StepState::Refused, Some(r), why)));
    let attempts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM action_starts WHERE incident_id = $1 AND action = $2",
    )
    .bind(g.step.incident_id)
    .bind(g.action)
    .fetch_one(&mut **tx)
    .await
    .map_err(classify)?;
    if attempts >= g.max_attempts {
        return refuse(
            Refusal::Attempts,
            format!(
                "policy: {} already started {attempts} times for this incident (cap {})",
                g.action, g.max_attempts
            ),
        );
    }
    if g.cooldown_seconds > 0 {
        let sql = format!(
            "SELECT MAX(started_at) AS last FROM action_starts WHERE action = $1 AND target = $2 \
             AND started_at > {since}",
            since = db_shift(3, '-'),
        );
        let row = sqlx::query(&sql)
            .bind(g.action)
            .bind(&g.step.target)
            .bind(g.cooldown_seconds)
            .fetch_one(&mut **tx)
            .await
            .map_err(classify)?;
        if let Some(last) = get_ot(&row, "last")? {
            return refuse(
                Refusal::Cooldown,
                format!(
                    "policy: cooldown — {} on {} last started at {}; not again within {} minutes of it",
                    g.action,
                    g.step.target,
                    last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    g.cooldown_seconds / 60
                ),
            );
        }
    }
    let (max, window) = g.budget;
    let sql = format!(
        "SELECT COUNT(*) FROM action_starts WHERE action = $1 AND started_at > {since}",
        since = db_shift(2, '-'),
    );
    let used: i64 = sqlx::query_scalar(&sql)
        .bind(g.action)
        .bind(window)
        .fetch_one(&mut **tx)
        .await
        .map_err(classify)?;
    if used >= max {
        return refuse(
            Refusal::Budget,
            format!(
                "policy: budget — {} started {used} times in the last {} minutes across all incidents (budget {max})",
                g.action,
                window / 60
            ),
        );
    }
    Ok(None)
}

async fn gate_event(
    tx: &mut sqlx::Transaction<'_, Db>,
    incident_id: i64,
    at: DateTime<Utc>,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(incident_id)
        .bind(t(at))
        .bind(kind)
        .bind(j(detail))
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}
