//! Plans and the claims that fence the work on them: an incident's steps and their moves, the
//! claim (lease and epoch) a process holds while it works an incident, target locks, and the
//! flapping breaker's count. The action gate, which starts a step, is in `gate`.
//!
//! Leases and windows are judged by the database's clock ([`super::query::Dialect`]).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::codec::Json;
use super::query::Row;
use super::{seconds, Store, StoreError};
use crate::domain::plan::{Claim, PlannedStep, Step, StepState, Transition};

/// The columns every step query selects.
const STEP_COLUMNS: &str = "id, incident_id, seq, attempt_group, kind, name, target, decision, \
    state, reason, output, decided_by, decided_at, started_at, finished_at";

/// A step from a row of [`STEP_COLUMNS`].
fn step(r: &Row) -> Result<Step, StoreError> {
    let text = |c: &str| -> Result<String, StoreError> {
        r.get::<Option<String>>(c)?
            .ok_or_else(|| StoreError::Corrupt(format!("plan step {c} is NULL")))
    };
    Ok(Step {
        id: r.get("id")?,
        incident_id: r.get("incident_id")?,
        seq: r.get("seq")?,
        group: r.get("attempt_group")?,
        kind: text("kind")?.parse()?,
        name: text("name")?.parse()?,
        target: text("target")?,
        decision: text("decision")?.parse()?,
        state: text("state")?.parse()?,
        reason: text("reason")?,
        output: r.get("output")?,
        decided_by: r.get("decided_by")?,
        decided_at: r.get("decided_at")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
    })
}

impl Store {
    /// Stores the plan with a `planned` event in one transaction; `false` if the incident already
    /// had one (another process made it first).
    pub async fn save_plan(
        &self,
        incident_id: i64,
        steps: &[PlannedStep],
        detail: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let existing: i64 = tx
            .query("SELECT COUNT(*) FROM plan_steps WHERE incident_id = $1")
            .bind(incident_id)
            .fetch_scalar()
            .await?;
        if existing > 0 {
            return Ok(false);
        }
        for (seq, s) in steps.iter().enumerate() {
            let inserted = tx
                .query(
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
                .execute()
                .await?;
            if inserted == 0 {
                // A concurrent plan won the unique (incident_id, seq): keep theirs.
                return Ok(false);
            }
        }
        tx.query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, 'planned', $3)")
            .bind(incident_id)
            .bind(at)
            .bind(Json(detail))
            .execute()
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The incident's plan, in order (empty before planning).
    pub async fn steps(&self, incident_id: i64) -> Result<Vec<Step>, StoreError> {
        let sql =
            format!("SELECT {STEP_COLUMNS} FROM plan_steps WHERE incident_id = $1 ORDER BY seq");
        let rows = self
            .writer()
            .query(&sql)
            .bind(incident_id)
            .fetch_all()
            .await?;
        rows.iter().map(step).collect()
    }

    /// Moves a step if it is still in one of `tr.from`, with a timeline event carrying `detail`,
    /// in one transaction. `false` when the step had moved on (someone else got there first).
    pub async fn transition(
        &self,
        tr: &Transition<'_>,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let current = tx
            .query("SELECT incident_id, state FROM plan_steps WHERE id = $1")
            .bind(tr.step_id)
            .fetch_optional()
            .await?;
        let Some(current) = current else {
            return Ok(false);
        };
        let incident_id: i64 = current.get("incident_id")?;
        let state: String = current.get("state")?;
        if !tr.from.iter().any(|s| s.as_str() == state) {
            return Ok(false);
        }
        let started = tr.to == StepState::Running;
        let finished = tr.to.is_final();
        let updated = tx
            .query(
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
            .bind(tr.output.map(Json))
            .bind(tr.decided_by)
            .bind(tr.at)
            .bind(started)
            .bind(finished)
            .bind(tr.step_id)
            .bind(&state)
            .bind(tr.fence.map(|c| c.holder.as_str()))
            .bind(tr.fence.map_or(0, |c| c.epoch))
            .execute()
            .await?;
        if updated == 0 {
            return Ok(false);
        }
        tx.query(
            "INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(incident_id)
        .bind(tr.at)
        .bind(tr.event)
        .bind(Json(detail))
        .execute()
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Releases `holder`'s claim (if still its own); `work_done` also marks the incident as
    /// needing no more work from any process.
    pub async fn release(
        &self,
        incident_id: i64,
        holder: &str,
        work_done: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.writer()
            .query(
                "UPDATE incidents SET claimed_by = NULL, claim_expires_at = NULL, \
                 work_done_at = COALESCE($1, work_done_at) WHERE id = $2 AND claimed_by = $3",
            )
            .bind(work_done)
            .bind(incident_id)
            .bind(holder)
            .execute()
            .await?;
        Ok(())
    }

    /// Open incidents with work left and no live claim: (id, alertname), oldest first. A lease
    /// is judged by the database's clock, as [`Store::claim`] judges it: a replica whose clock
    /// runs fast does not see another's live claim as expired.
    pub async fn claimable(&self, limit: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let sql = format!(
            "SELECT id, alertname FROM incidents WHERE status = 'open' AND work_done_at IS NULL \
             AND (claimed_by IS NULL OR claim_expires_at < {now}) ORDER BY id LIMIT $1",
            now = self.dialect().now(),
        );
        let rows = self.writer().query(&sql).bind(limit).fetch_all().await?;
        rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
    }

    /// Releases `holder`'s lock on `target` for the incident. A lock another process has taken
    /// since (it claimed the incident and resumed the step) is left alone: the process that
    /// lost its claim learns it only after its action returns.
    pub async fn unlock_target(
        &self,
        target: &str,
        incident_id: i64,
        holder: &str,
    ) -> Result<(), StoreError> {
        self.writer()
            .query(
                "DELETE FROM target_locks WHERE target = $1 AND incident_id = $2 AND holder = $3",
            )
            .bind(target)
            .bind(incident_id)
            .bind(holder)
            .execute()
            .await?;
        Ok(())
    }

    /// Claims the incident for `holder` for `lease` (judged by the database's clock) unless
    /// another live claim holds it; every new claim increments the incident's claim epoch, which
    /// the returned claim carries (the fencing token).
    pub async fn claim(
        &self,
        incident_id: i64,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, StoreError> {
        let db = self.dialect();
        let sql = format!(
            "UPDATE incidents SET claimed_by = $1, claim_expires_at = {until}, claim_epoch = claim_epoch + 1 \
             WHERE id = $3 AND (claimed_by IS NULL OR claimed_by = $1 OR claim_expires_at < {now}) \
             RETURNING claim_epoch",
            until = db.shift(2, '+'),
            now = db.now(),
        );
        let epoch: Option<i64> = self
            .writer()
            .query(&sql)
            .bind(holder)
            .bind(seconds(lease))
            .bind(incident_id)
            .fetch_optional_scalar()
            .await?;
        Ok(epoch.map(|epoch| Claim {
            holder: holder.to_owned(),
            epoch,
        }))
    }

    /// Extends `claim` by `lease` while it is still the incident's current claim; `false` when
    /// another process has claimed the incident since (this one must stop working it).
    pub async fn renew_claim(
        &self,
        incident_id: i64,
        claim: &Claim,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE incidents SET claim_expires_at = {until} \
             WHERE id = $2 AND claimed_by = $3 AND claim_epoch = $4",
            until = self.dialect().shift(1, '+'),
        );
        let done = self
            .writer()
            .query(&sql)
            .bind(seconds(lease))
            .bind(incident_id)
            .bind(&claim.holder)
            .bind(claim.epoch)
            .execute()
            .await?;
        Ok(done == 1)
    }

    /// Incidents of alert `fingerprint` opened before `before_id` within `window` (database
    /// clock): the flapping breaker's count.
    pub async fn recent_incidents(
        &self,
        fingerprint: &str,
        before_id: i64,
        window: Duration,
    ) -> Result<i64, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FROM incidents WHERE fingerprint = $1 AND id < $2 AND opened_at > {since}",
            since = self.dialect().shift(3, '-'),
        );
        self.writer()
            .query(&sql)
            .bind(fingerprint)
            .bind(before_id)
            .bind(seconds(window))
            .fetch_scalar()
            .await
    }
}
