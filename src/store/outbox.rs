//! The notification outbox's types and the store's interface to it (the SQL is in
//! `notify_queries.rs`, shared by both backends).

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
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

/// Notifications: the outbox and the per-incident cursor (see `crate::workflow::notify`).
impl Store {
    /// Open incidents of `alertname` opened before `opened_before`, oldest first.
    pub async fn overdue(
        &self,
        alertname: &str,
        opened_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Incident>, StoreError> {
        dispatch!(self, s => s.overdue(alertname, opened_before, limit).await)
    }

    /// Incidents with events newer than their notification cursor: (id, newest event id); closed
    /// ones only if updated after `closed_since`.
    pub async fn notify_candidates(
        &self,
        closed_since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        dispatch!(self, s => s.notify_candidates(closed_since, limit).await)
    }

    pub async fn notify_state(&self, incident_id: i64) -> Result<NotifyState, StoreError> {
        dispatch!(self, s => s.notify_state(incident_id).await)
    }

    /// Moves the cursor `from_event_id` → `upto_event_id` and queues `deliveries` atomically;
    /// `false` when another process moved it first.
    pub async fn enqueue_notifications(
        &self,
        incident_id: i64,
        from_event_id: i64,
        upto_event_id: i64,
        pagerduty: &str,
        deliveries: &[NewDelivery],
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.enqueue_notifications(incident_id, from_event_id, upto_event_id, pagerduty, deliveries, at).await)
    }

    /// Pending deliveries due at `now`, the first of each incident and channel.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        dispatch!(self, s => s.due_deliveries(now, limit).await)
    }

    /// Takes a due delivery until `until`; `false` if another process took it.
    pub async fn lease_delivery(
        &self,
        d: &Delivery,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.lease_delivery(d, until).await)
    }

    /// Records one attempt of a delivery (sent or failed) with its `notification_sent` or
    /// `notification_failed` event.
    pub async fn record_attempt(
        &self,
        d: &Delivery,
        outcome: &Attempt<'_>,
        at: DateTime<Utc>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_attempt(d, outcome, at, detail).await)
    }

    /// Forgets the incident's Slack message, so the next delivery posts a new one.
    pub async fn forget_slack_message(&self, incident_id: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.forget_slack_message(incident_id).await)
    }

    /// Every delivery of an incident, oldest first.
    pub async fn deliveries(&self, incident_id: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
        dispatch!(self, s => s.deliveries(incident_id).await)
    }
}
