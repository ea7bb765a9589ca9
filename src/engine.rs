//! The incident's life after the webhook: probe everything at once, diagnose, store it all.
//! (Remediation, verification and notification hang on here as they land.)
//!
//! Runs in the background: the webhook hands over newly opened incident ids through a bounded
//! queue and never waits. At start-up, open incidents left without a diagnosis (by a crash or a
//! full queue) are picked up again; probes are read-only, so re-running them is safe.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::diagnosis::{self, Diagnosis};
use crate::probes::{self, Finding, Probe, ProbeContext};
use crate::store::{Store, StoreError};

/// Runs the probes and the diagnosis; stores nothing (`replay`, `probe`, and the engine's core).
pub struct Examiner {
    settings: Arc<Settings>,
    probes: Vec<Arc<dyn Probe>>,
    kube: Option<kube::Client>,
    http: reqwest::Client,
}

/// Diagnoses incidents and records the outcome.
pub struct Engine {
    store: Store,
    examiner: Examiner,
    permits: Arc<Semaphore>,
    /// Incidents being diagnosed by this process: the queue and the resume pass can name the
    /// same one.
    in_flight: Mutex<HashSet<i64>>,
}

/// What one diagnosis produced.
#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub diagnosis: Diagnosis,
}

impl Examiner {
    /// The enabled probes. `kube`: the Kubernetes client, if there is a cluster.
    pub fn new(settings: Arc<Settings>, kube: Option<kube::Client>) -> Self {
        let probes = probes::enabled(&settings);
        // No total timeout here: the probe deadline (in `run_all`) is the one authority on time.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.probes.deadline_ms))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            probes,
            kube,
            http,
        }
    }

    /// Replaces the probes (tests, benchmarks).
    pub fn with_probes(mut self, probes: Vec<Arc<dyn Probe>>) -> Self {
        self.probes = probes;
        self
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.settings.probes.deadline_ms)
    }

    /// A fresh context: the Secret is read again for every diagnosis.
    pub fn context(&self) -> Arc<ProbeContext> {
        Arc::new(ProbeContext::new(
            self.settings.clone(),
            self.kube.clone(),
            self.http.clone(),
        ))
    }

    /// Runs the probes and the diagnosis.
    pub async fn examine(&self, ctx: Arc<ProbeContext>) -> Report {
        let findings = probes::run_all(&self.probes, ctx, self.deadline()).await;
        let diagnosis = diagnosis::diagnose(&findings);
        Report {
            findings,
            diagnosis,
        }
    }
}

impl Engine {
    pub fn new(store: Store, examiner: Examiner) -> Self {
        let permits = Arc::new(Semaphore::new(examiner.settings.probes.concurrency));
        Self {
            store,
            examiner,
            permits,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    /// Diagnoses one incident and stores findings, diagnosis and timeline. `Ok(None)` when
    /// another process had already diagnosed it.
    pub async fn diagnose(&self, incident_id: i64) -> Result<Option<Report>, StoreError> {
        let ex = &self.examiner;
        let names: Vec<&str> = ex.probes.iter().map(|p| p.name()).collect();
        self.store
            .append_event(
                incident_id,
                Utc::now(),
                "probes_started",
                &serde_json::json!({ "probes": names, "deadline_ms": ex.settings.probes.deadline_ms }),
            )
            .await?;
        let report = ex.examine(ex.context()).await;
        let saved = self
            .store
            .save_diagnosis(incident_id, &report.findings, &report.diagnosis, Utc::now())
            .await?;
        if !saved {
            return Ok(None);
        }
        let d = &report.diagnosis;
        metrics::counter!("backup_remediator_diagnoses_total", "scenario" => d.scenario.as_str())
            .increment(1);
        tracing::info!(
            incident_id,
            scenario = d.scenario.as_str(),
            confidence = d.confidence,
            summary = %d.summary,
            "incident diagnosed"
        );
        Ok(Some(report))
    }

    async fn diagnose_logged(self: Arc<Self>, incident_id: i64) {
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(incident_id)
        {
            return;
        }
        let result = async {
            let _permit = self.permits.clone().acquire_owned().await.ok()?;
            match self.store.diagnosis(incident_id).await {
                Ok(Some(_)) => return Some(Ok(None)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            Some(self.diagnose(incident_id).await)
        }
        .await;
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&incident_id);
        if let Some(Err(e)) = result {
            // Left undiagnosed: the next start-up (or resume pass) picks it up again.
            tracing::error!(incident_id, error = %e, "diagnosis could not be stored");
        }
    }

    /// Works incidents from `queue` until `stop`; first resumes undiagnosed open incidents.
    /// At stop, diagnoses in flight are dropped: they are read-only and resumed on next start.
    pub async fn run(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<i64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tasks = JoinSet::new();
        match self.store.undiagnosed(1000).await {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(
                        count = ids.len(),
                        "resuming incidents left without a diagnosis"
                    );
                }
                for id in ids {
                    tasks.spawn(self.clone().diagnose_logged(id));
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not look for undiagnosed incidents"),
        }
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                next = queue.recv() => match next {
                    Some(id) => {
                        tasks.spawn(self.clone().diagnose_logged(id));
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
    }
}
