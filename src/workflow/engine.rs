//! The incident's life after the webhook: claim → probe everything at once → diagnose → plan →
//! act → verify (the last three in [`crate::workflow::remediation`]).
//!
//! Runs in the background: the webhook hands over newly opened incident ids through a bounded
//! queue and never waits. With several replicas on one PostgreSQL, exactly one works an incident:
//! it holds a claim (a lease renewed while it works); a replica that dies leaves a claim that
//! expires, and the periodic sweep of another replica (or of the restarted process) takes the
//! incident over and resumes it from the store.
//!
//! Memory is bounded whatever the backlog: at most `remediation.window` incidents are worked at
//! once (one task each, `probes.concurrency` of them diagnosing); the rest wait in the store, and
//! the sweep pages them in as slots free up. A plan waiting for an approval holds no slot: it is
//! parked (its claim left to lapse) and worked again when an approval arrives or the sweep finds
//! it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Settings, Target};
use crate::domain::diagnosis::{self, Diagnosis};
use crate::domain::finding::Finding;
use crate::domain::incident::{Incident, IncidentStatus};
use crate::domain::plan::Claim;
use crate::probes::{self, Clients, Probe, ProbeContext, ReadOnly};
use crate::store::{Store, StoreError};
use crate::workflow::pace::{self, Pace, StormWatch};
use crate::workflow::playbooks;
use crate::workflow::remediation::{Progress, Remediator};

mod unrouted;

/// Runs the probes and the diagnosis; stores nothing (`replay`, `probe`, and the engine's core).
pub struct Examiner {
    settings: Arc<Settings>,
    probes: Vec<Arc<dyn Probe>>,
    kube: Option<kube::Client>,
    http: reqwest::Client,
    /// The AWS clients every diagnosis shares.
    clients: Arc<Clients>,
    /// Set when diagnoses must write nothing (replay, a dry-run policy).
    read_only: Option<ReadOnly>,
}

/// One target's diagnosis and remediation: its probes see only its settings, its remediator acts
/// only on its resources, under its policy.
struct Lane {
    name: String,
    examiner: Examiner,
    remediator: Option<Arc<Remediator>>,
}

/// Works incidents: claims each (one process per incident, with a lease), diagnoses it with its
/// target's probes, and hands it to its target's [`Remediator`]. An incident routed to no target
/// is escalated without any probe or action.
pub struct Engine {
    store: Store,
    /// The top-level settings (probes, remediation window, handled alerts).
    settings: Arc<Settings>,
    /// Per target name.
    lanes: HashMap<String, Lane>,
    /// Escalates the incidents of alerts that named no target (its plan has no action).
    unrouted: Option<Arc<Remediator>>,
    /// Who this process is in claims and locks.
    holder: String,
    lease: Duration,
    /// Diagnoses at once (`probes.concurrency`).
    permits: Arc<Semaphore>,
    /// Incidents worked at once (`remediation.window`).
    window: usize,
    /// Incidents being worked by this process: the queue and the sweep can name the same one.
    in_flight: Mutex<HashSet<i64>>,
    /// Incidents whose plan waits for an approval, parked by this process (ids only).
    parked: Mutex<HashSet<i64>>,
    /// Approval wake-ups seen so far: a plan that parks after one arrived is woken again.
    wakes: AtomicU64,
    /// Intake's pace: under a storm of new alerts no new incident is started (bounded; `pace`).
    intake_pace: Option<Arc<Pace>>,
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
        let http = probes::http_client(&settings);
        Self {
            settings,
            probes,
            kube,
            http,
            clients: Arc::default(),
            read_only: None,
        }
    }

    /// The same probes and shared clients, with `target`'s settings and `kube` (the client for
    /// its Kubernetes API).
    pub fn for_target(&self, target: &Target, kube: Option<kube::Client>) -> Self {
        Self {
            settings: target.settings.clone(),
            probes: self.probes.clone(),
            kube,
            http: self.http.clone(),
            clients: self.clients.clone(),
            read_only: self.read_only,
        }
    }

    /// The Kubernetes client of this examiner.
    pub fn kube(&self) -> Option<kube::Client> {
        self.kube.clone()
    }

    /// The HTTP client and AWS clients this examiner shares with every diagnosis.
    pub fn clients(&self) -> (reqwest::Client, Arc<Clients>) {
        (self.http.clone(), self.clients.clone())
    }

    /// Makes every diagnosis write nothing, not even a probe's test object (replay, dry run).
    pub fn with_read_only(mut self, read_only: Option<ReadOnly>) -> Self {
        self.read_only = read_only;
        self
    }

    /// Replaces the probes (tests, benchmarks).
    pub fn with_probes(mut self, probes: Vec<Arc<dyn Probe>>) -> Self {
        self.probes = probes;
        self
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.settings.probes.deadline_ms)
    }

    /// The probes that ask something of this target (its backup source's, see
    /// [`Probe::applies`]).
    pub fn probes(&self) -> Vec<Arc<dyn Probe>> {
        self.probes
            .iter()
            .filter(|p| p.applies(&self.settings))
            .cloned()
            .collect()
    }

    /// A fresh context: the Secret is read again for every diagnosis; the clients are shared.
    pub fn context(&self) -> Arc<ProbeContext> {
        Arc::new(
            ProbeContext::new(self.settings.clone(), self.kube.clone(), self.http.clone())
                .with_clients(self.clients.clone())
                .with_read_only(self.read_only),
        )
    }

    /// Runs the probes and the diagnosis.
    pub async fn examine(&self, ctx: Arc<ProbeContext>) -> Report {
        let findings = probes::run_all(&self.probes(), ctx, self.deadline()).await;
        let diagnosis = diagnosis::diagnose(&findings);
        Report {
            findings,
            diagnosis,
        }
    }
}

impl Engine {
    /// An engine that diagnoses only (no remediation): one lane per target of the examiner's
    /// settings, each with the examiner's probes and Kubernetes client.
    pub fn new(store: Store, examiner: Examiner) -> Self {
        let settings = examiner.settings.clone();
        let permits = Arc::new(Semaphore::new(settings.probes.concurrency));
        let lease = Duration::from_secs(settings.remediation.lease_seconds);
        let window = settings.remediation.window.max(1);
        let mut lanes: HashMap<String, Lane> = settings
            .fleet
            .iter()
            .map(|t| {
                let lane = Lane {
                    name: t.name.clone(),
                    examiner: examiner.for_target(t, examiner.kube.clone()),
                    remediator: None,
                };
                (t.name.clone(), lane)
            })
            .collect();
        if lanes.is_empty() {
            let lane = Lane {
                name: settings.kubernetes.namespace.clone(),
                examiner,
                remediator: None,
            };
            lanes.insert(lane.name.clone(), lane);
        }
        Self {
            store,
            settings,
            lanes,
            unrouted: None,
            holder: holder_name(),
            lease,
            permits,
            window,
            in_flight: Mutex::new(HashSet::new()),
            parked: Mutex::new(HashSet::new()),
            wakes: AtomicU64::new(0),
            intake_pace: None,
        }
    }

    /// Holds off starting new incidents while intake opens them in a storm (see `pace`).
    pub fn with_intake_pace(mut self, pace: Arc<Pace>) -> Self {
        self.intake_pace = Some(pace);
        self
    }

    /// Replaces the examiner of the target `name` (one with its own Kubernetes client).
    pub fn with_examiner(mut self, name: &str, examiner: Examiner) -> Self {
        if let Some(lane) = self.lanes.get_mut(name) {
            lane.examiner = examiner;
        }
        self
    }

    /// Adds remediation after diagnosis for the remediator's target (with one target, that one).
    /// The first remediator given also escalates the incidents routed to no target, unless
    /// [`Engine::with_unrouted`] names another.
    pub fn with_remediator(mut self, remediator: Arc<Remediator>) -> Self {
        let single = self.lanes.len() == 1;
        if let Some(lane) = self.lanes.get_mut(remediator.target()) {
            lane.remediator = Some(remediator.clone());
        } else if single {
            if let Some(lane) = self.lanes.values_mut().next() {
                lane.remediator = Some(remediator.clone());
            }
        }
        if self.unrouted.is_none() {
            self.unrouted = Some(remediator);
        }
        self
    }

    /// The remediator that escalates incidents routed to no target (it plans no action).
    pub fn with_unrouted(mut self, remediator: Arc<Remediator>) -> Self {
        self.unrouted = Some(remediator);
        self
    }

    /// The lane of `incident`'s target; `None` when it has none (or one no longer configured).
    /// An incident opened before targets existed (no target, and its `opened` record says
    /// nothing of routing) belongs to the implied target of a configuration without
    /// `[[targets]]`: it was always about that one backup.
    async fn lane_of(&self, incident: &Incident) -> Result<Option<&Lane>, StoreError> {
        if let Some(t) = incident.target.as_deref() {
            return Ok(self.lanes.get(t));
        }
        if !self.settings.targets.is_empty() || self.lanes.len() != 1 {
            return Ok(None);
        }
        let timeline = self.store.timeline(incident.id).await?;
        let routed = timeline
            .iter()
            .find(|e| e.kind == "opened")
            .is_some_and(|e| {
                e.detail.get("unmatched").is_some() || e.detail.get("target").is_some()
            });
        Ok(if routed {
            None
        } else {
            self.lanes.values().next()
        })
    }

    /// The approval wake-up shared by every remediator.
    fn waker(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.unrouted.as_ref().map(|r| r.waker())
    }

    /// This process's name in claims.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Diagnoses one incident and stores findings, diagnosis and timeline. `Ok(None)` when
    /// another process had already diagnosed it.
    pub async fn diagnose(&self, incident_id: i64) -> Result<Option<Report>, StoreError> {
        let Some(incident) = self.store.get_incident(incident_id).await? else {
            return Ok(None);
        };
        let Some(lane) = self.lane_of(&incident).await? else {
            return self.diagnose_unrouted(&incident).await;
        };
        let target = lane.name.as_str();
        let ex = &lane.examiner;
        // Secret fingerprints in evidence are keyed by the installation's key.
        probes::use_installation_key(&self.store).await?;
        let probes = ex.probes();
        let names: Vec<&str> = probes.iter().map(|p| p.name()).collect();
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
        crate::metrics::diagnosis(target, d.scenario.as_str());
        tracing::info!(
            incident_id,
            scenario = d.scenario.as_str(),
            confidence = d.confidence,
            summary = %d.summary,
            "incident diagnosed"
        );
        Ok(Some(report))
    }

    /// Everything this process does for one incident it has claimed. `true` when no more work
    /// is left for anyone.
    async fn work_claimed(&self, incident_id: i64, claim: &Claim) -> Result<bool, StoreError> {
        let Some(incident) = self.store.get_incident(incident_id).await? else {
            return Ok(true);
        };
        if incident.status != IncidentStatus::Open {
            return Ok(true);
        }
        if !playbooks::handles(&incident.alertname)
            && !self.settings.alerts.handled.contains(&incident.alertname)
        {
            // Incidents of other kinds (e.g. a failed restore test) are not the engine's.
            return Ok(true);
        }
        if self.store.diagnosis(incident_id).await?.is_none() {
            // `probes.concurrency` bounds diagnoses only: a plan waiting hours for an approval
            // must not keep new incidents from being diagnosed.
            let _permit = self.permits.clone().acquire_owned().await.ok();
            self.diagnose(incident_id).await?;
        }
        let lane = self.lane_of(&incident).await?;
        let remediator = match lane {
            Some(lane) => lane.remediator.as_ref(),
            None => self.unrouted.as_ref(),
        };
        match remediator {
            None if lane.is_none() => self.settle_unrouted(incident_id).await.map(|()| true),
            None => Ok(true),
            Some(r) => Ok(r.remediate(incident_id, claim).await? == Progress::Done),
        }
    }

    /// Claims the incident, works it while renewing the claim, and releases it.
    async fn work_logged(self: Arc<Self>, incident_id: i64) {
        // `start` has put the incident in `in_flight`.
        lock(&self.parked).remove(&incident_id);
        let wakes = self.wakes.load(Ordering::SeqCst);
        // Whether the incident was parked.
        let result: Result<bool, StoreError> = async {
            // The lease is judged by the database's clock; the epoch fences every step this
            // process moves, so a process presumed dead cannot act after another took over.
            let Some(claim) = self
                .store
                .claim(incident_id, &self.holder, self.lease)
                .await?
            else {
                tracing::debug!(incident_id, "claimed by another process");
                return Ok(false);
            };
            // Renew the claim while working; a failed renewal (the claim was lost, or the store
            // could not confirm it) stops the work here: the lease may lapse and another
            // process take over, so this one must not act on the incident any more.
            let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
            let me = self.clone();
            let held = claim.clone();
            let heartbeat = tokio::spawn(async move {
                let every = me.lease / 3;
                loop {
                    tokio::time::sleep(every).await;
                    let why = match me.store.renew_claim(incident_id, &held, me.lease).await {
                        Ok(true) => continue,
                        Ok(false) => "claim lost to another process".to_owned(),
                        Err(e) => format!("renewing the claim failed: {e}"),
                    };
                    let _ = lost_tx.send(why);
                    return;
                }
            });
            let outcome = tokio::select! {
                r = self.work_claimed(incident_id, &claim) => r.map(Some),
                Ok(why) = lost_rx => {
                    tracing::warn!(incident_id, reason = %why, "stopping work on the incident");
                    Ok(None)
                }
            };
            heartbeat.abort();
            match outcome {
                // Parked (a plan waiting for an approval): the claim is kept to lapse at its
                // lease end, so that no sweep takes the incident up again before then; an
                // approval wakes it earlier.
                Ok(Some(false)) => Ok(true),
                Ok(Some(true)) => self
                    .store
                    .release(incident_id, &self.holder, Some(Utc::now()))
                    .await
                    .map(|()| false),
                Ok(None) => Ok(false),
                Err(e) => {
                    let _ = self.store.release(incident_id, &self.holder, None).await;
                    Err(e)
                }
            }
        }
        .await;
        lock(&self.in_flight).remove(&incident_id);
        if let Ok(true) = result {
            lock(&self.parked).insert(incident_id);
            if self.wakes.load(Ordering::SeqCst) != wakes {
                // An approval arrived while this plan was being worked: look again.
                if let Some(w) = self.waker() {
                    w.notify_waiters();
                }
            }
        }
        if let Err(e) = result {
            // Left claimable: the next sweep (here or in another replica) picks it up again.
            tracing::error!(incident_id, error = %e, "working the incident failed");
        }
    }

    /// Starts working `incident_id` unless this process already is.
    fn start(self: &Arc<Self>, tasks: &mut JoinSet<()>, incident_id: i64) {
        if lock(&self.in_flight).insert(incident_id) {
            tasks.spawn(self.clone().work_logged(incident_id));
        }
    }

    /// Fills the free slots with the oldest claimable incidents of the store. `true` when the
    /// page was full: more may be waiting.
    async fn sweep(self: &Arc<Self>, tasks: &mut JoinSet<()>) -> bool {
        let free = self.window.saturating_sub(tasks.len());
        if free == 0 {
            return true;
        }
        match self
            .store
            .claimable(i64::try_from(free).unwrap_or(i64::MAX))
            .await
        {
            Ok(ids) => {
                let full = ids.len() >= free;
                for (id, _) in ids {
                    self.start(tasks, id);
                }
                full
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not look for incidents to work");
                false
            }
        }
    }

    /// Works incidents from `queue` until `stop`, at most `remediation.window` at once. Also
    /// pages in open incidents nobody holds (left by a crash, a full queue, a dead replica, or a
    /// lapsed parking) at start, every half lease, and whenever the window was full; and works a
    /// parked incident again when an approval arrives. At stop, work in flight is dropped:
    /// claims expire and every step resumes from its record.
    pub async fn run(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<i64>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tasks = JoinSet::new();
        let mut sweep = tokio::time::interval((self.lease / 2).max(Duration::from_secs(1)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (woken_tx, mut woken) = mpsc::channel::<()>(1);
        let forwarder = self.waker().map(|wake| {
            tokio::spawn(async move {
                loop {
                    wake.notified().await;
                    // A full channel already holds a wake-up: nothing is lost.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = woken_tx.try_send(()) {
                        return;
                    }
                }
            })
        });
        // Parked incidents an approval woke, waiting for a slot.
        let mut resume: VecDeque<i64> = VecDeque::new();
        // Whether the store may hold work this process has not seen (a full queue drops ids).
        let mut look = true;
        let mut storm = self.intake_pace.clone().map(StormWatch::new);
        let mut pace_tick = tokio::time::interval(pace::TICK);
        pace_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Intake is in a storm: start no new incident for now (approved plans still resume).
        let mut holding = false;
        loop {
            while tasks.len() < self.window {
                match resume.pop_front() {
                    Some(id) => self.start(&mut tasks, id),
                    None => break,
                }
            }
            if look && !holding && tasks.len() < self.window {
                look = self.sweep(&mut tasks).await;
            }
            let room = !holding && tasks.len() < self.window;
            if !room {
                // While the window is full (or held) the queue is not read: the webhook may drop
                // ids, which the sweep finds later.
                look = true;
            }
            tokio::select! {
                _ = pace_tick.tick(), if storm.is_some() => {
                    if let Some(w) = storm.as_mut() {
                        w.sample();
                        holding = w.hold();
                    }
                }
                _ = stop.changed() => break,
                _ = sweep.tick() => look = true,
                Some(()) = woken.recv() => {
                    self.wakes.fetch_add(1, Ordering::SeqCst);
                    resume.extend(lock(&self.parked).drain());
                }
                next = queue.recv(), if room => match next {
                    Some(id) => self.start(&mut tasks, id),
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        if let Some(f) = forwarder {
            f.abort();
        }
        tasks.shutdown().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A name for this process in claims: host, pid and a random part (a restarted process with the
/// same pid is someone else).
fn holder_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
