//! The runbook's procedures for every target: one restore tester and one manual-backup launcher
//! per target (each with that target's settings), the target of a request picked by name (a
//! request must name one when there are several), and the restore-test schedule that rotates
//! through the fleet: each period tests the `restore_test.targets_per_period` targets whose last
//! test is oldest (never tested first).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::config::{Settings, TargetChoice};
use crate::domain::source::BackupSource;
use crate::runbook::manual_backup::ManualBackups;
use crate::runbook::restore::{RestoreTester, TestRequest};
use crate::store::Store;

/// One target's procedures.
pub struct Runbook {
    pub restore: Arc<RestoreTester>,
    pub backups: Arc<ManualBackups>,
}

/// Every target's procedures.
pub struct RunbookFleet {
    settings: Arc<Settings>,
    store: Store,
    targets: BTreeMap<String, Runbook>,
}

impl RunbookFleet {
    /// One tester and one launcher per target of `settings`, each with `kube_for(target)` and
    /// the manual backup budget `budget_for(target)`.
    pub fn new(
        settings: &Settings,
        store: &Store,
        kube_for: impl Fn(&crate::config::Target) -> Option<kube::Client>,
        budget_for: impl Fn(&crate::config::Target) -> crate::domain::policy::ManualBackups,
    ) -> Self {
        let http = reqwest::Client::new();
        let targets = settings
            .fleet
            .iter()
            .map(|t| {
                let kube = kube_for(t);
                let runbook = Runbook {
                    restore: Arc::new(
                        RestoreTester::with_http(
                            t.settings.clone(),
                            store.clone(),
                            kube.clone(),
                            http.clone(),
                        )
                        .for_target(&t.name),
                    ),
                    backups: Arc::new(
                        ManualBackups::new(t.settings.clone(), store.clone(), kube)
                            .for_target(&t.name)
                            .with_budget(budget_for(t)),
                    ),
                };
                (t.name.clone(), runbook)
            })
            .collect();
        Self {
            settings: Arc::new(settings.clone()),
            store: store.clone(),
            targets,
        }
    }

    /// The procedures of the target named `name`; with one target, `None` picks it.
    pub fn pick(&self, name: Option<&str>) -> Result<&Runbook, TargetChoice> {
        let target = self.settings.pick_target(name)?;
        self.targets
            .get(&target.name)
            .ok_or_else(|| TargetChoice::Unknown {
                given: target.name.clone(),
                configured: self.settings.target_names(),
            })
    }

    /// Every configured database of every target (the OpenAPI document lists them).
    pub fn databases(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .settings
            .fleet
            .iter()
            .flat_map(|t| t.settings.target.databases.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The targets to test this period: `n` of them, never tested first, then oldest test first
    /// (ties in configuration order).
    pub fn due(&self, last: &BTreeMap<String, DateTime<Utc>>, n: usize) -> Vec<String> {
        let mut order: Vec<(Option<DateTime<Utc>>, usize, &str)> = self
            .settings
            .fleet
            .iter()
            .enumerate()
            .map(|(i, t)| (last.get(&t.name).copied(), i, t.name.as_str()))
            .collect();
        order.sort();
        order
            .into_iter()
            .take(n)
            .map(|(_, _, name)| name.to_owned())
            .collect()
    }

    /// Runs the schedule until `stop`: each period (`restore_test.schedule_hours`), once across
    /// replicas, tests the targets that are due.
    pub async fn run_schedule(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let cfg = &self.settings.restore_test;
        if !cfg.enabled {
            return;
        }
        let configured: Vec<&Runbook> = self
            .targets
            .values()
            .filter(|r| r.restore.configured())
            .filter(|r| {
                // The scheduled test restores pg_dump archives from S3; a pgBackRest target's
                // restore test is `pgbackrest_restore::run_test`, not scheduled yet.
                let pg_dump = r.restore.source() == BackupSource::PgDumpCronJob;
                if !pg_dump {
                    tracing::info!(
                        target_name = %r.restore.target(),
                        "no scheduled restore test: the target's backups are not pg_dump archives"
                    );
                }
                pg_dump
            })
            .collect();
        if configured.is_empty() {
            tracing::info!("scheduled restore tests are off: restore_test.target_url is not set");
            return;
        }
        for r in &configured {
            r.restore.interrupt_stale().await;
        }
        let single = self.targets.len() == 1;
        let period = cfg.schedule_hours.saturating_mul(3600) as i64;
        let mut last_slot = None;
        loop {
            let slot = Utc::now().timestamp() / period;
            if last_slot != Some(slot) {
                last_slot = Some(slot);
                let last = match self.store.last_restore_test_by_target().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "scheduled restore tests could not look at the last ones");
                        BTreeMap::new()
                    }
                };
                for name in self.due(&last, cfg.targets_per_period.max(1)) {
                    let Some(r) = self.targets.get(&name) else {
                        continue;
                    };
                    // One test per database, target and period across replicas (the slot);
                    // the single target keeps the slot names it had before targets.
                    let key = if single {
                        format!("schedule:{period}:{slot}")
                    } else {
                        format!("schedule:{period}:{slot}:{name}")
                    };
                    let req = TestRequest {
                        trigger: "schedule".into(),
                        actor: "schedule".into(),
                        ..TestRequest::default()
                    };
                    match r.restore.start(&req, Some(&key)).await {
                        Ok(tests) if tests.is_empty() => {}
                        Ok(tests) => {
                            tracing::info!(target_name = %name, tests = tests.len(), "scheduled restore tests started");
                            r.restore.run(tests).await;
                        }
                        Err(e) => {
                            tracing::error!(target_name = %name, error = %e, "scheduled restore tests could not start")
                        }
                    }
                }
            }
            let next = (slot + 1) * period - Utc::now().timestamp();
            let wait = Duration::from_secs(next.clamp(1, 300) as u64);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fleet(n: usize) -> Settings {
        let mut toml = String::new();
        for i in 0..n {
            toml.push_str(&format!(
                "[[targets]]\nname = \"t{i}\"\nmatch = {{ namespace = \"n{i}\" }}\n"
            ));
        }
        Settings::from_toml(&toml).unwrap()
    }

    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let opts = crate::store::StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(5),
        };
        Store::connect("", &dir.path().join("s.sqlite"), &opts)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_schedule_tests_never_tested_targets_first_then_the_oldest() {
        let settings = fleet(4);
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let f = RunbookFleet::new(
            &settings,
            &store,
            |_| None,
            |_| crate::domain::policy::Policy::builtin().manual_backups,
        );
        let at = |h: u32| Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap();
        let mut last = BTreeMap::from([
            ("t0".to_owned(), at(3)),
            ("t1".to_owned(), at(1)),
            ("t3".to_owned(), at(2)),
        ]);
        assert_eq!(f.due(&last, 1), ["t2"], "never tested first");
        assert_eq!(f.due(&last, 3), ["t2", "t1", "t3"]);
        last.insert("t2".into(), at(4));
        assert_eq!(f.due(&last, 1), ["t1"], "then the oldest test");
        assert_eq!(f.due(&BTreeMap::new(), 2), ["t0", "t1"]);
    }

    #[tokio::test]
    async fn a_request_names_its_target_when_there_are_several() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let two = RunbookFleet::new(
            &fleet(2),
            &store,
            |_| None,
            |_| crate::domain::policy::Policy::builtin().manual_backups,
        );
        assert_eq!(two.pick(Some("t1")).unwrap().restore.target(), "t1");
        assert!(matches!(two.pick(None), Err(TargetChoice::Required(_))));
        let one = RunbookFleet::new(
            &Settings::from_toml("").unwrap(),
            &store,
            |_| None,
            |_| crate::domain::policy::Policy::builtin().manual_backups,
        );
        assert_eq!(one.pick(None).unwrap().restore.target(), "link-services");
    }
}
