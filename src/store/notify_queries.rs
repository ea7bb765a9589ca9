// Notification queries (the outbox and the per-incident cursor), shared verbatim by the
// PostgreSQL and SQLite stores like `plan_queries.rs`: each store module supplies `t` / `j`,
// `get_t` / `get_ot`, `incident` (a row to an [`Incident`]) and `This`.

impl This {
/// Open incidents of `alertname` opened before `opened_before`, oldest first (the escalation
/// deadline).
pub(super) async fn overdue(
    &self,
    alertname: &str,
    opened_before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Incident>, StoreError> {
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE status = 'open' AND alertname = $1 \
         AND opened_at < $2 ORDER BY id LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(alertname)
        .bind(t(opened_before))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
    rows.iter().map(incident).collect()
}

/// Incidents with timeline events (other than notifications) newer than their cursor, that are
/// worth a message (diagnosed, escalated or remediated; an alert that cleared before its
/// diagnosis is not): (incident id, newest such event id). Closed
/// incidents not updated since `closed_since` are not looked at (the scan stays small).
pub(super) async fn notify_candidates(
    &self,
    closed_since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    sqlx::query_as(
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
    .bind(t(closed_since))
    .bind(limit)
    .fetch_all(&self.pool)
    .await
    .map_err(classify)
}

/// The incident's notification cursor, Slack message and PagerDuty state.
pub(super) async fn notify_state(&self, incident_id: i64) -> Result<NotifyState, StoreError> {
    let row: Option<(i64, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT last_event_id, slack_channel, slack_ts, pagerduty FROM notify_state WHERE incident_id = $1",
    )
    .bind(incident_id)
    .fetch_optional(&self.pool)
    .await
    .map_err(classify)?;
    Ok(row.map_or_else(NotifyState::default, |(last_event_id, ch, ts, pd)| NotifyState {
        last_event_id,
        slack: ch.zip(ts),
        pagerduty: pd,
    }))
}

/// Moves the cursor from `from_event_id` to `upto_event_id` and queues `deliveries`, in one
/// transaction. A pending Slack API delivery of the incident is replaced (newest rendering wins;
/// its retry time is kept) rather than queued twice. `false` (nothing written) when another
/// process moved the cursor first.
pub(super) async fn enqueue_notifications(
    &self,
    incident_id: i64,
    from_event_id: i64,
    upto_event_id: i64,
    pagerduty: &str,
    deliveries: &[NewDelivery],
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut tx = self.pool.begin().await.map_err(classify)?;
    let moved = sqlx::query(
        "INSERT INTO notify_state (incident_id, last_event_id, pagerduty) VALUES ($1, $2, $3) \
         ON CONFLICT (incident_id) DO UPDATE SET last_event_id = excluded.last_event_id, \
         pagerduty = excluded.pagerduty WHERE notify_state.last_event_id = $4",
    )
    .bind(incident_id)
    .bind(upto_event_id)
    .bind(pagerduty)
    .bind(from_event_id)
    .execute(&mut *tx)
    .await
    .map_err(classify)?;
    if moved.rows_affected() != 1 {
        return Ok(false);
    }
    for d in deliveries {
        if d.kind == "slack_api" {
            let replaced = sqlx::query(
                "UPDATE notify_outbox SET payload = $1, version = version + 1 \
                 WHERE incident_id = $2 AND kind = 'slack_api' AND state = 'pending'",
            )
            .bind(j(&d.payload))
            .bind(incident_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            if replaced.rows_affected() > 0 {
                continue;
            }
        }
        sqlx::query(
            "INSERT INTO notify_outbox (incident_id, channel, kind, payload, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(incident_id)
        .bind(&d.channel)
        .bind(&d.kind)
        .bind(j(&d.payload))
        .bind(t(at))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    }
    tx.commit().await.map_err(classify)?;
    Ok(true)
}

/// Pending deliveries due at `now`, oldest first, and only the first pending one of each
/// incident and channel (so a trigger goes out before its resolve, an update after its post).
pub(super) async fn due_deliveries(
    &self,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let rows = sqlx::query(
        "SELECT o.id, o.incident_id, o.channel, o.kind, CAST(o.payload AS TEXT) AS payload, o.version, \
         o.attempts, o.next_attempt_at FROM notify_outbox o \
         WHERE o.state = 'pending' AND o.next_attempt_at <= $1 \
           AND NOT EXISTS (SELECT 1 FROM notify_outbox p WHERE p.incident_id = o.incident_id \
               AND p.channel = o.channel AND p.state = 'pending' AND p.id < o.id) \
         ORDER BY o.id LIMIT $2",
    )
    .bind(t(now))
    .bind(limit)
    .fetch_all(&self.pool)
    .await
    .map_err(classify)?;
    rows.iter()
        .map(|r| {
            let payload: String = r.try_get("payload").map_err(classify)?;
            Ok(Delivery {
                id: r.try_get("id").map_err(classify)?,
                incident_id: r.try_get("incident_id").map_err(classify)?,
                channel: r.try_get("channel").map_err(classify)?,
                kind: r.try_get("kind").map_err(classify)?,
                payload: serde_json::from_str(&payload).map_err(|e| corrupt("outbox payload", e))?,
                version: r.try_get("version").map_err(classify)?,
                attempts: r.try_get("attempts").map_err(classify)?,
                next_attempt_at: get_t(r, "next_attempt_at")?,
            })
        })
        .collect()
}

/// Takes a due delivery for this process until `until` (another replica skips it meanwhile).
pub(super) async fn lease_delivery(
    &self,
    d: &Delivery,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE notify_outbox SET next_attempt_at = $1 \
         WHERE id = $2 AND state = 'pending' AND next_attempt_at = $3",
    )
    .bind(t(until))
    .bind(d.id)
    .bind(t(d.next_attempt_at))
    .execute(&self.pool)
    .await
    .map_err(classify)?;
    Ok(done.rows_affected() == 1)
}

/// Records one attempt of a delivery with its timeline event, in one transaction: sent (with
/// the Slack message it made; when the payload was replaced while it was being sent, the row
/// stays pending, due at once, for the newer one) or failed (retried at `retry_at`, or given up).
pub(super) async fn record_attempt(
    &self,
    d: &Delivery,
    outcome: &Attempt<'_>,
    at: DateTime<Utc>,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    let mut tx = self.pool.begin().await.map_err(classify)?;
    let kind = match outcome {
        Attempt::Sent { slack } => {
            let done = sqlx::query(
                "UPDATE notify_outbox SET state = 'sent', sent_at = $1, attempts = attempts + 1 \
                 WHERE id = $2 AND version = $3",
            )
            .bind(t(at))
            .bind(d.id)
            .bind(d.version)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            if done.rows_affected() == 0 {
                sqlx::query("UPDATE notify_outbox SET next_attempt_at = $1, attempts = 0 WHERE id = $2")
                    .bind(t(at))
                    .bind(d.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
            }
            if let Some((channel, ts)) = slack {
                sqlx::query(
                    "INSERT INTO notify_state (incident_id, slack_channel, slack_ts) VALUES ($1, $2, $3) \
                     ON CONFLICT (incident_id) DO UPDATE SET slack_channel = excluded.slack_channel, \
                     slack_ts = excluded.slack_ts",
                )
                .bind(d.incident_id)
                .bind(*channel)
                .bind(*ts)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            "notification_sent"
        }
        Attempt::Failed { retry_at, error } => {
            sqlx::query(
                "UPDATE notify_outbox SET attempts = attempts + 1, last_error = $1, \
                 state = CASE WHEN $2 THEN 'pending' ELSE 'failed' END, next_attempt_at = $3 WHERE id = $4",
            )
            .bind(*error)
            .bind(retry_at.is_some())
            .bind(t(retry_at.unwrap_or(at)))
            .bind(d.id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
            "notification_failed"
        }
    };
    sqlx::query("INSERT INTO incident_events (incident_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
        .bind(d.incident_id)
        .bind(t(at))
        .bind(kind)
        .bind(j(detail))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    tx.commit().await.map_err(classify)
}

/// Forgets the Slack message of an incident (it was deleted: the next delivery posts anew).
pub(super) async fn forget_slack_message(&self, incident_id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE notify_state SET slack_channel = NULL, slack_ts = NULL WHERE incident_id = $1")
        .bind(incident_id)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Every delivery of an incident, oldest first (API, tests).
pub(super) async fn deliveries(&self, incident_id: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, channel, kind, state, attempts, last_error, sent_at FROM notify_outbox \
         WHERE incident_id = $1 ORDER BY id",
    )
    .bind(incident_id)
    .fetch_all(&self.pool)
    .await
    .map_err(classify)?;
    rows.iter()
        .map(|r| {
            Ok(DeliveryRecord {
                id: r.try_get("id").map_err(classify)?,
                channel: r.try_get("channel").map_err(classify)?,
                kind: r.try_get("kind").map_err(classify)?,
                state: r.try_get("state").map_err(classify)?,
                attempts: r.try_get("attempts").map_err(classify)?,
                last_error: r.try_get("last_error").map_err(classify)?,
                sent_at: get_ot(r, "sent_at")?,
            })
        })
        .collect()
}
}
