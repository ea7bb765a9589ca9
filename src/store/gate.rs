//! The action gate: the one transaction that starts a step of a plan, or says why not (claim,
//! state, policy verdict, attempt cap, cooldown, budget, target lock). Time is the database's
//! ([`super::query::Dialect`]); gate transactions run one at a time
//! ([`super::query::Dialect::gate_serialize`]) so that two replicas never both see room in the
//! same budget.

use chrono::{DateTime, Utc};

use super::codec::Json;
use super::query::Tx;
use super::{Store, StoreError};
use crate::domain::plan::{GateOutcome, GateRequest, Refusal, StepState, Verdict};

/// How a step the gate does not start ends: its state, the refusal if any, and why.
type Ending = (StepState, Option<Refusal>, String);

impl Store {
    /// The action gate (see [`GateRequest`]): in one transaction, checks that `g.claim` still
    /// holds the incident (epoch and lease by the database clock), that the step is still in
    /// `g.from`, that the incident is open, the policy verdict, the attempt cap, the cooldown,
    /// the budget and the target lock — then moves the step to `running` with its intent and
    /// records the start. A failed check ends the step (`skipped`, `dry_run`, `refused`) with its
    /// reason in the same transaction, except a lost claim or a moved step (left alone) and a
    /// held lock (`Busy`, nothing written). A resumed step (`g.resume`: `running`, left by a
    /// process that stopped) passes the same checks; one that fails them ends `interrupted`.
    pub async fn gate(&self, g: &GateRequest<'_>) -> Result<GateOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let db = tx.dialect();
        tx.query(db.gate_serialize()).execute().await?;
        let sql = format!(
            "SELECT status, claimed_by, claim_epoch, \
             CASE WHEN claim_expires_at > {now} THEN 1 ELSE 0 END AS live FROM incidents WHERE id = $1",
            now = db.now(),
        );
        let Some(row) = tx
            .query(&sql)
            .bind(g.step.incident_id)
            .fetch_optional()
            .await?
        else {
            return Ok(GateOutcome::Lost(
                "the incident no longer exists".to_owned(),
            ));
        };
        let status: String = row.get("status")?;
        let holder: Option<String> = row.get("claimed_by")?;
        let epoch: i64 = row.get("claim_epoch")?;
        let live: i32 = row.get("live")?;
        if holder.as_deref() != Some(g.claim.holder.as_str()) || epoch != g.claim.epoch || live == 0
        {
            return Ok(GateOutcome::Lost(format!(
                "{} no longer holds the incident's claim (epoch {})",
                g.claim.holder, g.claim.epoch
            )));
        }
        let state: Option<String> = tx
            .query("SELECT state FROM plan_steps WHERE id = $1")
            .bind(g.step.id)
            .fetch_optional_scalar()
            .await?;
        let Some(state) = state.filter(|s| g.from.iter().any(|f| f.as_str() == s)) else {
            return Ok(GateOutcome::Lost("the step moved on".to_owned()));
        };

        // A resumed step passes the same checks as a new one: the policy in force now, the
        // incident still open, attempts, cooldown and budget (its own start left out of them).
        let mut end: Option<Ending> = if status != "open" {
            let why = if status == "resolved" {
                "Alertmanager resolved the alert; the step is skipped".to_owned()
            } else {
                format!("the incident is {status}; the step is skipped")
            };
            Some((StepState::Skipped, None, why))
        } else {
            match g.verdict {
                Verdict::DryRun(why) => Some((StepState::DryRun, None, why.to_owned())),
                Verdict::Refuse(r, why) => Some((StepState::Refused, Some(r), why.to_owned())),
                Verdict::Run => None,
            }
        };
        if end.is_none() && g.counted {
            end = limits(&mut tx, g).await?;
        }
        if g.resume {
            // Whatever would have kept it from starting keeps it from resuming: the step ends
            // `interrupted`, saying why, and its incident's lock (the stopped process's) goes.
            end = end.map(|(_, refusal, why)| {
                let why = format!(
                    "interrupted: the process that ran it stopped, and it is not resumed: {why}"
                );
                (StepState::Interrupted, refusal, why)
            });
            if end.is_some() && g.counted {
                tx.query("DELETE FROM target_locks WHERE target = $1 AND incident_id = $2")
                    .bind(&g.step.target)
                    .bind(g.step.incident_id)
                    .execute()
                    .await?;
            }
        }
        if let Some((to, refusal, reason)) = end {
            let kind = match to {
                StepState::Skipped => "step_skipped",
                StepState::DryRun => "step_dry_run",
                StepState::Interrupted => "step_interrupted",
                _ => "step_refused",
            };
            let mut detail = g.detail.clone();
            detail["state"] = serde_json::json!(to);
            detail["reason"] = serde_json::json!(reason);
            if let Some(r) = refusal {
                detail["refusal"] = serde_json::json!(r);
            }
            let at = Utc::now();
            tx.query("UPDATE plan_steps SET state = $1, reason = $2, finished_at = $3 WHERE id = $4 AND state = $5")
                .bind(to.as_str())
                .bind(&reason)
                .bind(at)
                .bind(g.step.id)
                .bind(&state)
                .execute()
                .await?;
            event(&mut tx, g.step.incident_id, at, kind, &detail).await?;
            tx.commit().await?;
            return Ok(GateOutcome::Ended {
                state: to,
                refusal,
                reason,
            });
        }

        if g.counted && !g.resume {
            // The fleet-wide cap: a storm of failing targets never starts a storm of Jobs.
            let running: i64 = tx
                .query(
                    "SELECT COUNT(*) FROM plan_steps WHERE state = 'running' \
                     AND kind IN ('action', 'verify') AND id <> $1",
                )
                .bind(g.step.id)
                .fetch_scalar()
                .await?;
            if running >= g.fleet_cap {
                return Ok(GateOutcome::Busy(format!(
                    "{running} actions are running across the fleet (remediation.max_concurrent_actions = {})",
                    g.fleet_cap
                )));
            }
        }
        if g.counted {
            let sql = format!(
                "INSERT INTO target_locks (target, incident_id, holder, expires_at) VALUES ($1, $2, $3, {until}) \
                 ON CONFLICT (target) DO UPDATE SET incident_id = excluded.incident_id, holder = excluded.holder, \
                 expires_at = excluded.expires_at \
                 WHERE target_locks.incident_id = excluded.incident_id OR target_locks.expires_at < {now} \
                 RETURNING target",
                until = db.shift(4, '+'),
                now = db.now(),
            );
            let got: Option<String> = tx
                .query(&sql)
                .bind(&g.step.target)
                .bind(g.step.incident_id)
                .bind(&g.claim.holder)
                .bind(g.lock_seconds)
                .fetch_optional_scalar()
                .await?;
            if got.is_none() {
                let other: Option<i64> = tx
                    .query("SELECT incident_id FROM target_locks WHERE target = $1")
                    .bind(&g.step.target)
                    .fetch_optional_scalar()
                    .await?;
                return Ok(GateOutcome::Busy(format!(
                    "{} is being changed by incident {}",
                    g.step.target,
                    other.map_or_else(|| "?".to_owned(), |o| o.to_string())
                )));
            }
        }
        let sql = format!(
            "UPDATE plan_steps SET state = 'running', output = $1, \
             started_at = CASE WHEN started_at IS NULL THEN {now} ELSE started_at END \
             WHERE id = $2 AND state = $3",
            now = db.now(),
        );
        tx.query(&sql)
            .bind(Json(g.intent))
            .bind(g.step.id)
            .bind(&state)
            .execute()
            .await?;
        if g.counted && !g.resume {
            let sql = format!(
                "INSERT INTO action_starts (action, target, incident_id, step_id, started_at) \
                 VALUES ($1, $2, $3, $4, {now})",
                now = db.now(),
            );
            tx.query(&sql)
                .bind(g.action.as_str())
                .bind(&g.step.target)
                .bind(g.step.incident_id)
                .bind(g.step.id)
                .execute()
                .await?;
        }
        let mut detail = g.detail.clone();
        detail["state"] = serde_json::json!(StepState::Running);
        detail["output"] = g.intent.clone();
        let (kind, note) = if g.resume {
            (
                "step_resumed",
                "resumed after the process that ran it stopped",
            )
        } else {
            ("step_started", "")
        };
        if !note.is_empty() {
            detail["reason"] = serde_json::json!(note);
        }
        event(&mut tx, g.step.incident_id, Utc::now(), kind, &detail).await?;
        tx.commit().await?;
        Ok(GateOutcome::Started)
    }
}

/// The gate's attempt cap, cooldown and budget, in its transaction: the refusal, if any. The
/// step's own start (a resumed step has one) is not counted against it.
async fn limits(tx: &mut Tx, g: &GateRequest<'_>) -> Result<Option<Ending>, StoreError> {
    let refuse = |r: Refusal, why: String| Ok(Some((StepState::Refused, Some(r), why)));
    let db = tx.dialect();
    let attempts: i64 = tx
        .query(
            "SELECT COUNT(*) FROM action_starts WHERE incident_id = $1 AND action = $2 \
             AND step_id <> $3",
        )
        .bind(g.step.incident_id)
        .bind(g.action.as_str())
        .bind(g.step.id)
        .fetch_scalar()
        .await?;
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
             AND started_at > {since} AND step_id <> $4",
            since = db.shift(3, '-'),
        );
        let row = tx
            .query(&sql)
            .bind(g.action.as_str())
            .bind(&g.step.target)
            .bind(g.cooldown_seconds)
            .bind(g.step.id)
            .fetch_one()
            .await?;
        if let Some(last) = row.get::<Option<DateTime<Utc>>>("last")? {
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
    // The budget is the target's: one failing target cannot spend another's.
    let sql = format!(
        "SELECT COUNT(*) FROM action_starts WHERE action = $1 AND started_at > {since} \
         AND step_id <> $3 \
         AND EXISTS (SELECT 1 FROM incidents i WHERE i.id = action_starts.incident_id \
         AND i.target = (SELECT target FROM incidents WHERE id = $4))",
        since = db.shift(2, '-'),
    );
    let used: i64 = tx
        .query(&sql)
        .bind(g.action.as_str())
        .bind(window)
        .bind(g.step.id)
        .bind(g.step.incident_id)
        .fetch_scalar()
        .await?;
    if used >= max {
        return refuse(
            Refusal::Budget,
            format!(
                "policy: budget — {} started {used} times in the last {} minutes across this target's incidents (budget {max})",
                g.action,
                window / 60
            ),
        );
    }
    Ok(None)
}

/// Appends the gate's timeline event in its transaction.
async fn event(
    tx: &mut Tx,
    incident_id: i64,
    at: DateTime<Utc>,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    tx.query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(incident_id)
        .bind(at)
        .bind(kind)
        .bind(Json(detail))
        .execute()
        .await?;
    Ok(())
}
