//! Group commit for the webhook's first deliveries: the incidents that concurrent requests open
//! are written together, one transaction per batch, and each request is answered only after the
//! transaction holding its incident has committed (nothing acknowledged can be lost).
//!
//! Why: a distinct alert costs one durable insert, and under a storm the store's per-transaction
//! price (a round trip per statement, a WAL flush per commit, and on SQLite the one writer
//! connection everyone queues for) dominates. Batching needs no waiting: a batch is whatever
//! queued up while the previous one was being written, so a lone alert goes at once and a storm
//! forms large batches by itself.
//!
//! A batch the store refuses as a whole (one alert it cannot hold) is retried alert by alert, so
//! that one alert's failure never fails the others; a store outage fails the whole batch (the
//! webhook answers 503 and Alertmanager retries).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{Opened, Store, StoreCondition, StoreError};
use crate::domain::incident::NewIncident;

/// Most incidents in one transaction.
const MAX_BATCH: usize = 128;

/// Requests that may wait for a batch; past this a request waits to be queued (backpressure).
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Opened, StoreError>>;

/// Opens incidents through batched transactions. Cheap to share; the writer task starts on first
/// use and ends when the last handle is dropped.
pub struct GroupCommit {
    store: Store,
    tx: OnceLock<mpsc::Sender<(NewIncident, Reply)>>,
}

impl GroupCommit {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            tx: OnceLock::new(),
        }
    }

    /// Opens `new` (or finds its incident) like [`Store::open_incident`], in a batch with those of
    /// concurrent callers; returns once that batch is committed.
    pub async fn open(&self, new: NewIncident) -> Result<Opened, StoreError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(self.store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if tx.send((new, reply)).await.is_err() {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable(StoreCondition::Unreachable, sqlx::Error::WorkerCrashed)
}

/// How many batches may be in flight at once: SQLite has one writer (a second batch would only
/// queue behind it); PostgreSQL overlaps one batch's commit with the next one's insert.
fn in_flight(store: &Store) -> usize {
    match store {
        Store::Postgres(_) => 2,
        Store::Sqlite(_) => 1,
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<(NewIncident, Reply)>) {
    let permits = Arc::new(Semaphore::new(in_flight(&store)));
    loop {
        // Wait for room before collecting, so the batch holds everything that queued meanwhile.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let store = store.clone();
        tokio::spawn(async move {
            write(&store, batch).await;
            drop(permit);
        });
    }
}

/// Writes one batch and answers each of its callers.
async fn write(store: &Store, batch: Vec<(NewIncident, Reply)>) {
    if let [(new, _)] = batch.as_slice() {
        let result = store.open_incident(new).await;
        if let Some((_, reply)) = batch.into_iter().next() {
            let _ = reply.send(result);
        }
        return;
    }
    // The same alert twice in a batch (a cache eviction race): the first opens it, the second
    // joins it.
    let mut first: HashMap<(&str, DateTime<Utc>), usize> = HashMap::new();
    let mut unique: Vec<usize> = Vec::with_capacity(batch.len());
    let mut dup_of: Vec<Option<usize>> = Vec::with_capacity(batch.len());
    for (i, (new, _)) in batch.iter().enumerate() {
        match first.entry((new.fingerprint.as_str(), new.starts_at)) {
            std::collections::hash_map::Entry::Occupied(e) => dup_of.push(Some(*e.get())),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
                unique.push(i);
                dup_of.push(None);
            }
        }
    }
    let news: Vec<&NewIncident> = unique.iter().map(|&i| &batch[i].0).collect();
    let mut results: Vec<Option<Result<Opened, StoreError>>> =
        (0..batch.len()).map(|_| None).collect();
    match store.open_incidents(&news).await {
        Ok(opened) => {
            for (&i, o) in unique.iter().zip(opened) {
                results[i] = Some(Ok(o));
            }
        }
        Err(StoreError::Unavailable(condition, source)) => {
            // Every caller gets the batch's condition (its 503 reason) and the cause's text.
            let text = source.to_string();
            for &i in &unique {
                results[i] = Some(Err(StoreError::Unavailable(
                    condition,
                    sqlx::Error::Io(std::io::Error::other(text.clone())),
                )));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "a batch of incidents was refused; writing them one by one");
            for &i in &unique {
                results[i] = Some(store.open_incident(&batch[i].0).await);
            }
        }
    }
    for i in 0..batch.len() {
        if let Some(of) = dup_of[i] {
            results[i] = Some(match &results[of] {
                Some(Ok(o)) => Ok(Opened::Existing(o.id())),
                _ => store.open_incident(&batch[i].0).await,
            });
        }
    }
    for ((_, reply), result) in batch.into_iter().zip(results) {
        let _ = reply.send(result.unwrap_or_else(|| Err(gone())));
    }
}
