//! Notifications: the outbox of deliveries (Slack, PagerDuty) and each incident's cursor (the
//! newest timeline event already turned into deliveries), with the types the notifier uses.
//! See `crate::workflow::notify`.

use chrono::{DateTime, Utc};

use super::codec::Json;
use super::incidents::{incident, INCIDENT_COLUMNS};
use super::{corrupt, Store, StoreError};
use crate::domain::incident::Incident;

/// Where an incident's notifications stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    /// The newest timeline event already turned into deliveries.
    pub last_event_id: i64,
    /// The Slack message (channel, ts) to update in place, once posted.
    pub slack: Option<(String, String)>,
    /// `""` (never paged), `triggered` or `resolved`.
    pub pagerduty: String,
}

/// A delivery to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// `slack` or `pagerduty`.
    pub channel: String,
    /// `slack_api`, `slack_webhook`, `trigger` or `resolve`.
    pub kind: String,
    /// What to send, without credentials (they are added when sending).
    pub payload: serde_json::Value,
}

/// A queued delivery, due.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub incident_id: i64,
    pub channel: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub version: i32,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
}

/// What one attempt of a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// Taken; for Slack's Web API, the message's (channel, ts).
    Sent { slack: Option<(&'a str, &'a str)> },
    /// Refused or unanswered: tried again at `retry_at`, or given up (`None`).
    Failed {
        retry_at: Option<DateTime<Utc>>,
        error: &'a str,
    },
}

/// A delivery as recorded, for the API and tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub channel: String,
    pub kind: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub last_error: String,
    pub sent_at: Option<DateTime<Utc>>,
}

/// Notifications: the outbox and the per-incident cursor.
impl Store {
    /// Open incidents of `alertname` opened before `opened_before`, oldest first (the
    /// escalation deadline).
    pub async fn overdue(
        &self,
        alertname: &str,
        opened_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Incident>, StoreError> {
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status = 'open' AND alertname = $1 \
             AND opened_at < $2 ORDER BY id LIMIT $3"
        );
        let rows = self
            .writer()
            .query(&sql)
            .bind(alertname)
            .bind(opened_before)
            .bind(limit)
            .fetch_all()
            .await?;
        rows.iter().map(incident).collect()
    }

    /// Incidents with timeline events (other than notifications) newer than their cursor, that
    /// are worth a message (diagnosed, escalated or remediated; an alert that cleared before its
    /// diagnosis is not): (incident id, newest such event id). Closed incidents not updated since
    /// `closed_since` are not looked at (the scan stays small).
    pub async fn notify_candidates(
        &self,
        closed_since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = self
            .writer()
            .query(
                "SELECT i.id, MAX(e.id) FROM incidents i \
                 JOIN incident_events e ON e.incident_id = i.id \
                 LEFT JOIN notify_state s ON s.incident_id = i.id \
                 WHERE (i.status = 'open' OR i.updated_at > $1) \
                   AND e.id > COALESCE(s.last_event_id, 0) \
                   AND e.kind NOT IN ('notification_sent', 'notification_failed') \
                   AND (i.status IN ('escalated', 'remediated') \
                        OR EXISTS (SELECT 1 FROM diagnoses d WHERE d.incident_id = i.id)) \
                 GROUP BY i.id ORDER BY i.id LIMIT $2",
            )
            .bind(closed_since)
            .bind(limit)
            .fetch_all()
            .await?;
        rows.iter().map(|r| Ok((r.get(0)?, r.get(1)?))).collect()
    }

    /// The incident's notification cursor, Slack message and PagerDuty state.
    pub async fn notify_state(&self, incident_id: i64) -> Result<NotifyState, StoreError> {
        let row = self
            .writer()
            .query(
                "SELECT last_event_id, slack_channel, slack_ts, pagerduty FROM notify_state WHERE incident_id = $1",
            )
            .bind(incident_id)
            .fetch_optional()
            .await?;
        let Some(r) = row else {
            return Ok(NotifyState::default());
        };
        let channel: Option<String> = r.get("slack_channel")?;
        let ts: Option<String> = r.get("slack_ts")?;
        Ok(NotifyState {
            last_event_id: r.get("last_event_id")?,
            slack: channel.zip(ts),
            pagerduty: r.get("pagerduty")?,
        })
    }

    /// Moves the cursor from `from_event_id` to `upto_event_id` and queues `deliveries`, in one
    /// transaction. A pending Slack API delivery of the incident is replaced (newest rendering
    /// wins; its retry time is kept) rather than queued twice. `false` (nothing written) when
    /// another process moved the cursor first.
    pub async fn enqueue_notifications(
        &self,
        incident_id: i64,
        from_event_id: i64,
        upto_event_id: i64,
        pagerduty: &str,
        deliveries: &[NewDelivery],
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let moved = tx
            .query(
                "INSERT INTO notify_state (incident_id, last_event_id, pagerduty) VALUES ($1, $2, $3) \
                 ON CONFLICT (incident_id) DO UPDATE SET last_event_id = excluded.last_event_id, \
                 pagerduty = excluded.pagerduty WHERE notify_state.last_event_id = $4",
            )
            .bind(incident_id)
            .bind(upto_event_id)
            .bind(pagerduty)
            .bind(from_event_id)
            .execute()
            .await?;
        if moved != 1 {
            return Ok(false);
        }
        for d in deliveries {
            if d.kind == "slack_api" {
                let replaced = tx
                    .query(
                        "UPDATE notify_outbox SET payload = $1, version = version + 1 \
                         WHERE incident_id = $2 AND kind = 'slack_api' AND state = 'pending'",
                    )
                    .bind(Json(&d.payload))
                    .bind(incident_id)
                    .execute()
                    .await?;
                if replaced > 0 {
                    continue;
                }
            }
            tx.query(
                "INSERT INTO notify_outbox (incident_id, channel, kind, payload, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $5)",
            )
            .bind(incident_id)
            .bind(&d.channel)
            .bind(&d.kind)
            .bind(Json(&d.payload))
            .bind(at)
            .execute()
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Pending deliveries due at `now`, oldest first, and only the first pending one of each
    /// incident and channel (so a trigger goes out before its resolve, an update after its post).
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = self
            .writer()
            .query(
                "SELECT o.id, o.incident_id, o.channel, o.kind, CAST(o.payload AS TEXT) AS payload, o.version, \
                 o.attempts, o.next_attempt_at FROM notify_outbox o \
                 WHERE o.state = 'pending' AND o.next_attempt_at <= $1 \
                   AND NOT EXISTS (SELECT 1 FROM notify_outbox p WHERE p.incident_id = o.incident_id \
                       AND p.channel = o.channel AND p.state = 'pending' AND p.id < o.id) \
                 ORDER BY o.id LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| {
                let payload: String = r.get("payload")?;
                Ok(Delivery {
                    id: r.get("id")?,
                    incident_id: r.get("incident_id")?,
                    channel: r.get("channel")?,
                    kind: r.get("kind")?,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| corrupt("outbox payload", e))?,
                    version: r.get("version")?,
                    attempts: r.get("attempts")?,
                    next_attempt_at: r.get("next_attempt_at")?,
                })
            })
            .collect()
    }

    /// Takes a due delivery for this process until `until` (another replica skips it
    /// meanwhile); `false` if another process took it.
    pub async fn lease_delivery(
        &self,
        d: &Delivery,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = self
            .writer()
            .query(
                "UPDATE notify_outbox SET next_attempt_at = $1 \
                 WHERE id = $2 AND state = 'pending' AND next_attempt_at = $3",
            )
            .bind(until)
            .bind(d.id)
            .bind(d.next_attempt_at)
            .execute()
            .await?;
        Ok(done == 1)
    }

    /// Records one attempt of a delivery with its `notification_sent` or `notification_failed`
    /// event, in one transaction: sent (with the Slack message it made; when the payload was
    /// replaced while it was being sent, the row stays pending, due at once, for the newer one)
    /// or failed (retried at `retry_at`, or given up).
    pub async fn record_attempt(
        &self,
        d: &Delivery,
        outcome: &Attempt<'_>,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let kind = match outcome {
            Attempt::Sent { slack } => {
                let done = tx
                    .query(
                        "UPDATE notify_outbox SET state = 'sent', sent_at = $1, attempts = attempts + 1 \
                         WHERE id = $2 AND version = $3",
                    )
                    .bind(at)
                    .bind(d.id)
                    .bind(d.version)
                    .execute()
                    .await?;
                if done == 0 {
                    tx.query(
                        "UPDATE notify_outbox SET next_attempt_at = $1, attempts = 0 WHERE id = $2",
                    )
                    .bind(at)
                    .bind(d.id)
                    .execute()
                    .await?;
                }
                if let Some((channel, ts)) = slack {
                    tx.query(
                        "INSERT INTO notify_state (incident_id, slack_channel, slack_ts) VALUES ($1, $2, $3) \
                         ON CONFLICT (incident_id) DO UPDATE SET slack_channel = excluded.slack_channel, \
                         slack_ts = excluded.slack_ts",
                    )
                    .bind(d.incident_id)
                    .bind(*channel)
                    .bind(*ts)
                    .execute()
                    .await?;
                }
                "notification_sent"
            }
            Attempt::Failed { retry_at, error } => {
                tx.query(
                    "UPDATE notify_outbox SET attempts = attempts + 1, last_error = $1, \
                     state = CASE WHEN $2 THEN 'pending' ELSE 'failed' END, next_attempt_at = $3 WHERE id = $4",
                )
                .bind(*error)
                .bind(retry_at.is_some())
                .bind(retry_at.unwrap_or(at))
                .bind(d.id)
                .execute()
                .await?;
                "notification_failed"
            }
        };
        tx.query(
            "INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(d.incident_id)
        .bind(at)
        .bind(kind)
        .bind(Json(detail))
        .execute()
        .await?;
        tx.commit().await
    }

    /// Forgets the incident's Slack message (it was deleted: the next delivery posts anew).
    pub async fn forget_slack_message(&self, incident_id: i64) -> Result<(), StoreError> {
        self.writer()
            .query("UPDATE notify_state SET slack_channel = NULL, slack_ts = NULL WHERE incident_id = $1")
            .bind(incident_id)
            .execute()
            .await?;
        Ok(())
    }

    /// Every delivery of an incident, oldest first (API, tests).
    pub async fn deliveries(&self, incident_id: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = self
            .writer()
            .query(
                "SELECT id, channel, kind, state, attempts, last_error, sent_at FROM notify_outbox \
                 WHERE incident_id = $1 ORDER BY id",
            )
            .bind(incident_id)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    id: r.get("id")?,
                    channel: r.get("channel")?,
                    kind: r.get("kind")?,
                    state: r.get("state")?,
                    attempts: r.get("attempts")?,
                    last_error: r.get("last_error")?,
                    sent_at: r.get("sent_at")?,
                })
            })
            .collect()
    }
}
