//! Turning validated alerts into incidents: open, join (de-duplicate) or resolve.
//!
//! The first delivery of an alert (fingerprint + startsAt) is written durably before the webhook
//! answers. Re-sends are the common case (Alertmanager repeats a group every `repeat_interval`
//! and on every change), so they cost no durable write each: a bounded in-memory map remembers
//! which incident an alert belongs to, concurrent first deliveries of the same alert wait for one
//! insert (single flight), and re-send counts are added up in memory and written in one batch
//! every `flush_interval`. Across replicas the store's unique constraint decides.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch, OnceCell};
use utoipa::ToSchema;

use crate::domain::alert::{Alert, AlertKey, AlertStatus, Notification};
use crate::domain::incident::NewIncident;
use crate::domain::target::Routes;
use crate::store::{GroupCommit, Opened, Renotified, Resolution, Store, StoreError};

/// What happened to one alert of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new incident was opened.
    Opened,
    /// The alert belongs to an incident already open: counted as a re-send.
    Renotified,
    /// The incident was marked resolved.
    Resolved,
    /// The incident was already resolved.
    AlreadyResolved,
    /// A resolved alert for which no incident exists.
    ResolvedUnknown,
    /// Not an alert this service handles: acknowledged and counted only.
    Ignored,
    /// This alert could not be stored (the store refused it while it was up); the others of the
    /// delivery were still applied. The reason is in `error` and in the service's log.
    Failed,
}

/// One alert's result, as the webhook reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AlertResult {
    pub alertname: String,
    pub fingerprint: String,
    pub outcome: Outcome,
    /// The incident the alert belongs to; absent when there is none (`ignored`, `failed`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<i64>,
    /// What was changed so that the store can hold the alert (also on the incident's timeline).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adjustments: Vec<String>,
    /// Why the alert was not stored (outcome `failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Entry {
    id: OnceCell<i64>,
    resolved: AtomicBool,
}

struct Known {
    map: HashMap<AlertKey, Arc<Entry>>,
    order: VecDeque<AlertKey>,
    capacity: usize,
}

impl Known {
    fn entry(&mut self, key: &AlertKey) -> Arc<Entry> {
        if let Some(e) = self.map.get(key) {
            return e.clone();
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        let e = Arc::new(Entry {
            id: OnceCell::new(),
            resolved: AtomicBool::new(false),
        });
        self.map.insert(key.clone(), e.clone());
        self.order.push_back(key.clone());
        e
    }
}

/// Re-sends counted since the last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    pub count: i64,
    pub last_seen_at: DateTime<Utc>,
}

/// Receives alerts; owns de-duplication and the re-send counter.
pub struct Intake {
    store: Store,
    /// First deliveries are written through this: concurrent ones share a transaction.
    opener: GroupCommit,
    handled: HashSet<String>,
    /// Which target each alert is about, by its labels.
    routes: Routes,
    known: Mutex<Known>,
    pending: Mutex<HashMap<i64, Pending>>,
    /// Held for writing while a flush moves counts from `pending` into the store, and for
    /// reading while the API adds `pending` to what it read from the store: a reader sees the
    /// counts either still in memory or already stored, never neither (or both).
    flushing: tokio::sync::RwLock<()>,
    opened_tx: Option<mpsc::Sender<i64>>,
    /// Incidents opened here, for the engine's view of a storm.
    pace: Arc<crate::workflow::pace::Pace>,
    /// Ids the full work queue dropped, logged in aggregate (a storm must not flood the log).
    queue_full: QueueFullLog,
    /// Alerts of names this service does not handle, by name: misrouted alerts are common and
    /// their names are the sender's choice, so the series are bounded.
    ignored: crate::metrics::BoundedCounter,
}

/// At most one "work queue full" warning per this long; it says how many ids were dropped.
const QUEUE_FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Aggregates the warnings for ids the full work queue dropped: one line per
/// [`QUEUE_FULL_LOG_EVERY`] with the count since the last line and the latest id, instead of a
/// line per alert while a storm lasts.
#[derive(Default)]
struct QueueFullLog {
    since_last: std::sync::atomic::AtomicU64,
    last_line: Mutex<Option<tokio::time::Instant>>,
}

impl QueueFullLog {
    fn dropped(&self, incident_id: i64) {
        self.since_last.fetch_add(1, Ordering::Relaxed);
        let mut last = lock(&self.last_line);
        if last.is_some_and(|t| t.elapsed() < QUEUE_FULL_LOG_EVERY) {
            return;
        }
        *last = Some(tokio::time::Instant::now());
        let dropped = self.since_last.swap(0, Ordering::Relaxed);
        drop(last);
        tracing::warn!(
            dropped,
            latest_incident_id = incident_id,
            "work queue full; these incidents wait in the store (the engine's sweep picks them up)"
        );
    }
}

/// How many names of ignored alerts get a series of their own; the rest count as `other`.
const IGNORED_NAMES: usize = 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain map updates).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn to_json(map: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::to_value(map).unwrap_or_default()
}

impl Intake {
    /// `handled`: the alert names that open incidents. `cache_capacity`: alerts remembered.
    pub fn new(store: Store, handled: &[String], cache_capacity: usize) -> Self {
        Self {
            opener: GroupCommit::new(store.clone()),
            store,
            handled: handled.iter().cloned().collect(),
            routes: Routes::default(),
            known: Mutex::new(Known {
                map: HashMap::new(),
                order: VecDeque::new(),
                capacity: cache_capacity.max(1),
            }),
            pending: Mutex::new(HashMap::new()),
            flushing: tokio::sync::RwLock::new(()),
            opened_tx: None,
            queue_full: QueueFullLog::default(),
            pace: Arc::default(),
            ignored: crate::metrics::alerts_ignored(IGNORED_NAMES),
        }
    }

    /// Routes each new alert to the target its labels name (the incident records it); an alert
    /// that matches none, or several, is stored with no target and escalated, never acted on.
    pub fn with_routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// How fast incidents are opened here: the engine holds off under a storm (`pace`).
    pub fn pace(&self) -> Arc<crate::workflow::pace::Pace> {
        self.pace.clone()
    }

    /// Every newly opened incident id is sent here, for the work that follows (diagnosis).
    /// The send never blocks the webhook: a full queue drops the id with a warning (work is
    /// recovered from the store).
    pub fn with_opened_queue(mut self, tx: mpsc::Sender<i64>) -> Self {
        self.opened_tx = Some(tx);
        self
    }

    /// Applies every alert of a delivery, each on its own: one alert the store refuses is
    /// reported `failed` and never keeps the others from being stored. Only an unavailable store
    /// fails the delivery (the caller answers 503 and Alertmanager retries it; what was stored
    /// is joined on the retry, not duplicated).
    pub async fn accept(&self, n: &Notification) -> Result<Vec<AlertResult>, StoreError> {
        let mut out = Vec::with_capacity(n.alerts.len());
        for alert in &n.alerts {
            let mut adjustments = n.adjustments.clone();
            adjustments.extend(alert.adjustments.iter().cloned());
            let (outcome, incident_id, error) = match self.accept_one(n, alert, &adjustments).await
            {
                Ok((outcome, id)) => (outcome, id, None),
                Err(e) if e.is_unavailable() => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, fingerprint = %alert.fingerprint, "could not store an alert; the rest of the delivery goes on");
                    (
                        Outcome::Failed,
                        None,
                        Some("the store refused this alert; see the service log".to_owned()),
                    )
                }
            };
            crate::metrics::alert(alert_outcome(outcome));
            out.push(AlertResult {
                alertname: alert.name.clone(),
                fingerprint: alert.fingerprint.clone(),
                outcome,
                incident_id,
                adjustments,
                error,
            });
        }
        Ok(out)
    }

    async fn accept_one(
        &self,
        n: &Notification,
        alert: &Alert,
        adjustments: &[String],
    ) -> Result<(Outcome, Option<i64>), StoreError> {
        if !self.handled.contains(&alert.name) {
            self.ignored.count(&alert.name);
            return Ok((Outcome::Ignored, None));
        }
        match alert.status {
            AlertStatus::Firing => self.firing(n, alert, adjustments).await,
            AlertStatus::Resolved => self.resolved(alert, adjustments).await,
        }
    }

    async fn firing(
        &self,
        n: &Notification,
        alert: &Alert,
        adjustments: &[String],
    ) -> Result<(Outcome, Option<i64>), StoreError> {
        let entry = lock(&self.known).entry(&alert.key());
        let created = AtomicBool::new(false);
        let id = *entry
            .id
            .get_or_try_init(|| async {
                let now = Utc::now();
                let route = self.routes.route(&alert.labels);
                let mut detail = opened_detail(n, alert, adjustments);
                match self.routes.unmatched_detail(&route, &alert.labels) {
                    Some(unmatched) => detail["unmatched"] = unmatched,
                    None => detail["target"] = serde_json::json!(route.target()),
                }
                let new = NewIncident {
                    fingerprint: alert.fingerprint.clone(),
                    alertname: alert.name.clone(),
                    starts_at: alert.starts_at,
                    severity: alert.severity().to_owned(),
                    labels: to_json(&alert.labels),
                    annotations: to_json(&alert.annotations),
                    generator_url: alert.generator_url.clone(),
                    opened_at: now,
                    detail,
                    target: route.target().map(str::to_owned),
                };
                let opened = self.opener.open(new).await?;
                let fresh = matches!(opened, Opened::Created(_));
                created.store(fresh, Ordering::Relaxed);
                if fresh {
                    if let Some(why) = route.reason() {
                        crate::metrics::alert_unmatched();
                        tracing::warn!(fingerprint = %alert.fingerprint, reason = %why,
                            labels = ?alert.labels, "alert matches no single target: stored and escalated, nothing will be changed");
                    }
                }
                Ok::<_, StoreError>(opened.id())
            })
            .await?;
        if created.load(Ordering::Relaxed) {
            crate::metrics::incident_opened();
            self.pace.opened();
            tracing::info!(incident_id = id, fingerprint = %alert.fingerprint, "incident opened");
            if let Some(tx) = &self.opened_tx {
                if tx.try_send(id).is_err() {
                    self.queue_full.dropped(id);
                }
            }
            Ok((Outcome::Opened, Some(id)))
        } else {
            crate::metrics::incident_deduplicated();
            let mut pending = lock(&self.pending);
            let p = pending.entry(id).or_insert(Pending {
                count: 0,
                last_seen_at: Utc::now(),
            });
            p.count += 1;
            p.last_seen_at = p.last_seen_at.max(Utc::now());
            Ok((Outcome::Renotified, Some(id)))
        }
    }

    async fn resolved(
        &self,
        alert: &Alert,
        adjustments: &[String],
    ) -> Result<(Outcome, Option<i64>), StoreError> {
        let entry = lock(&self.known).entry(&alert.key());
        if entry.resolved.load(Ordering::Relaxed) {
            return Ok((Outcome::AlreadyResolved, entry.id.get().copied()));
        }
        let at = alert.ends_at.unwrap_or_else(Utc::now);
        let mut detail = serde_json::json!({ "source": "alertmanager", "ends_at": at });
        if !adjustments.is_empty() {
            detail["adjustments"] = serde_json::json!(adjustments);
        }
        let res = self
            .store
            .resolve_by_alert(&alert.fingerprint, alert.starts_at, at, &detail)
            .await?;
        let (outcome, id) = match res {
            Resolution::Resolved(id) => {
                crate::metrics::incident_resolved();
                tracing::info!(incident_id = id, fingerprint = %alert.fingerprint, "incident resolved by Alertmanager");
                (Outcome::Resolved, Some(id))
            }
            Resolution::AlreadyResolved(id) => (Outcome::AlreadyResolved, Some(id)),
            Resolution::Unknown => (Outcome::ResolvedUnknown, None),
        };
        if id.is_some() {
            entry.resolved.store(true, Ordering::Relaxed);
        }
        Ok((outcome, id))
    }

    /// Hold this while reading incidents from the store and adding [`Intake::pending`] to them,
    /// so that a flush in progress is neither missed nor counted twice.
    pub async fn consistent_read(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.flushing.read().await
    }

    /// Re-sends of `incident_id` counted here and not yet written.
    pub fn pending(&self, incident_id: i64) -> Option<Pending> {
        lock(&self.pending).get(&incident_id).copied()
    }

    /// Writes the counted re-sends in one batch. On failure they are kept for the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let _flushing = self.flushing.write().await;
        let taken: HashMap<i64, Pending> = std::mem::take(&mut *lock(&self.pending));
        if taken.is_empty() {
            return Ok(0);
        }
        let batch: Vec<Renotified> = taken
            .iter()
            .map(|(&incident_id, p)| Renotified {
                incident_id,
                count: p.count,
                last_seen_at: p.last_seen_at,
            })
            .collect();
        match self.store.record_renotifications(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = lock(&self.pending);
                for (id, p) in taken {
                    let cur = pending.entry(id).or_insert(Pending {
                        count: 0,
                        last_seen_at: p.last_seen_at,
                    });
                    cur.count += p.count;
                    cur.last_seen_at = cur.last_seen_at.max(p.last_seen_at);
                }
                Err(e)
            }
        }
    }

    /// Flushes every `interval` until `stop` turns true, then once more.
    pub async fn run_flusher(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "could not write re-send counts; will retry");
            }
        }
        if let Err(e) = self.flush().await {
            tracing::error!(error = %e, "re-send counts lost at shutdown");
        }
    }
}

/// Detail of the `opened` event: where the alert came from, and what was changed to store it.
fn opened_detail(n: &Notification, alert: &Alert, adjustments: &[String]) -> serde_json::Value {
    let mut detail = serde_json::json!({
        "receiver": n.receiver,
        "group_key": n.group_key,
        "external_url": n.external_url,
        "starts_at": alert.starts_at,
    });
    if !adjustments.is_empty() {
        detail["adjustments"] = serde_json::json!(adjustments);
    }
    detail
}

/// The label of `o` in `backup_remediator_alerts_total`.
fn alert_outcome(o: Outcome) -> crate::metrics::AlertOutcome {
    use crate::metrics::AlertOutcome as M;
    match o {
        Outcome::Opened => M::Opened,
        Outcome::Renotified => M::Renotified,
        Outcome::Resolved => M::Resolved,
        Outcome::AlreadyResolved => M::AlreadyResolved,
        Outcome::ResolvedUnknown => M::ResolvedUnknown,
        Outcome::Ignored => M::Ignored,
        Outcome::Failed => M::Failed,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::store::StoreOptions;

    /// Log lines written while the guard lives (this thread's default subscriber).
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines_with(&self, needle: &str) -> Vec<String> {
            String::from_utf8_lossy(&lock(&self.0))
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect()
        }
    }

    fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn delivery(fingerprint: &str) -> Notification {
        let body = serde_json::json!({
            "version": "4", "status": "firing", "receiver": "r", "groupKey": "{}:{}",
            "externalURL": "http://alertmanager:9093", "truncatedAlerts": 0,
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "alerts": [{
                "status": "firing", "fingerprint": fingerprint,
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical"},
                "annotations": {}, "startsAt": "2026-11-25T01:02:03.456Z",
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph"
            }]
        });
        crate::domain::alert::decode(body.to_string().as_bytes()).expect("valid payload")
    }

    #[tokio::test]
    async fn a_full_work_queue_logs_one_warning_for_a_storm_not_one_per_alert() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        };
        let store = Store::connect("", &dir.path().join("s.sqlite"), &opts)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        // Nobody reads the queue: after the first id it is full.
        let (tx, _rx) = mpsc::channel(1);
        let intake =
            Intake::new(store, &["PostgreSQLBackupFailed".to_owned()], 100).with_opened_queue(tx);
        let (logs, _guard) = capture_logs();

        for i in 0..50 {
            let answer = intake
                .accept(&delivery(&format!("{i:016x}")))
                .await
                .unwrap();
            assert_eq!(answer[0].outcome, Outcome::Opened);
        }

        let lines = logs.lines_with("work queue full");
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_full_warning_says_how_many_ids_were_dropped_since_the_last_one() {
        let log = QueueFullLog::default();
        let (logs, _guard) = capture_logs();

        for id in 1..=500 {
            log.dropped(id);
        }
        tokio::time::advance(QUEUE_FULL_LOG_EVERY).await;
        log.dropped(501);

        let lines = logs.lines_with("work queue full");
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].contains("dropped=1 "), "{}", lines[0]);
        assert!(lines[1].contains("dropped=500 "), "{}", lines[1]);
        assert!(lines[1].contains("latest_incident_id=501"), "{}", lines[1]);
    }
}
