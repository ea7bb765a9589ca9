//! Playbooks: one per scenario of the runbook, each turning a diagnosis into ordered steps in
//! attempt groups (a fix and its verification; the next group if it fails; escalation last).
//! The policy then decides each action step: auto, approve, never, or dry run.
//!
//! A playbook for another alert (say the runbook's related "WAL archiving failed") is one new
//! module implementing [`Playbook`] with its `alertname`, one line in [`registry`], and the alert
//! name in `alerts.handled`.

mod authentication;
mod connection;
mod encryption;
mod no_target;
mod repository;
mod s3_access;
mod schedule;
mod storage;
mod transient;
mod version_mismatch;
mod wal_archive;

use crate::config::Settings;
use crate::domain::action::ActionName;
use crate::domain::alert::{BACKUP_FAILED, BACKUP_STALE};
use crate::domain::diagnosis::{Diagnosis, Scenario};
use crate::domain::finding::{Finding, Signal};
use crate::domain::plan::{Decision, PlannedStep, StepKind};
use crate::domain::policy::Policy;

/// What a playbook sees when it plans.
pub struct PlanInput<'a> {
    pub diagnosis: &'a Diagnosis,
    pub findings: &'a [Finding],
    pub settings: &'a Settings,
}

impl PlanInput<'_> {
    /// Whether any probe reported a signal matching `f`.
    pub fn has_signal(&self, f: impl Fn(&Signal) -> bool) -> bool {
        self.findings.iter().flat_map(|x| &x.signals).any(f)
    }
}

/// A step as a playbook proposes it; the policy adds the decision.
#[derive(Debug, Clone)]
pub struct Proposed {
    pub kind: StepKind,
    pub name: ActionName,
    pub target: String,
    pub why: String,
}

impl Proposed {
    pub fn action(name: ActionName, target: String, why: impl Into<String>) -> Self {
        Self {
            kind: StepKind::Action,
            name,
            target,
            why: why.into(),
        }
    }

    pub fn check(name: ActionName, target: String, why: impl Into<String>) -> Self {
        Self {
            kind: StepKind::Check,
            name,
            target,
            why: why.into(),
        }
    }

    /// The runbook's verification: rerun the backup from the CronJob and check S3.
    pub fn verify(s: &Settings) -> Self {
        Self {
            kind: StepKind::Verify,
            name: ActionName::VerifyBackup,
            target: targets::cronjob(s),
            why: "rerun the backup from the CronJob, watch it, and check its new object in S3"
                .into(),
        }
    }

    pub fn escalate(why: impl Into<String>) -> Self {
        Self {
            kind: StepKind::Escalate,
            name: ActionName::Escalate,
            target: "on-call".into(),
            why: why.into(),
        }
    }
}

/// Turns one scenario of one alert into attempt groups of steps.
pub trait Playbook: Send + Sync {
    /// The alerts it answers.
    fn alertnames(&self) -> &'static [&'static str] {
        &[BACKUP_FAILED, BACKUP_STALE]
    }
    /// The scenario it answers.
    fn scenario(&self) -> Scenario;
    /// The alerts it answers whatever the scenario (its alert is its diagnosis).
    fn any_scenario_of(&self) -> &'static [&'static str] {
        &[]
    }
    /// The attempt groups, in order; the last should escalate.
    fn groups(&self, input: &PlanInput<'_>) -> Vec<Vec<Proposed>>;
}

/// Every playbook the service has.
pub fn registry() -> Vec<Box<dyn Playbook>> {
    vec![
        Box::new(connection::Connection),
        Box::new(authentication::Authentication),
        Box::new(storage::Storage),
        Box::new(s3_access::S3Access),
        Box::new(encryption::Encryption),
        Box::new(transient::Transient),
        Box::new(schedule::BackupSchedule),
        Box::new(version_mismatch::VersionMismatch),
        Box::new(no_target::NoTarget),
        Box::new(wal_archive::WalArchive),
        Box::new(repository::Repository),
    ]
}

/// Whether any playbook answers `alertname`.
pub fn handles(alertname: &str) -> bool {
    registry()
        .iter()
        .any(|p| p.alertnames().contains(&alertname))
}

/// Target names: what an action acts on; cooldowns and locks key on them.
pub mod targets {
    use crate::config::Settings;

    pub fn cronjob(s: &Settings) -> String {
        format!(
            "cronjob/{}/{}",
            s.kubernetes.namespace, s.kubernetes.backup_cronjob
        )
    }
    pub fn pvc(s: &Settings) -> String {
        format!(
            "pvc/{}/{}",
            s.kubernetes.namespace, s.kubernetes.primary_pvc
        )
    }
    pub fn statefulset(s: &Settings) -> String {
        format!(
            "statefulset/{}/{}",
            s.kubernetes.namespace, s.kubernetes.primary_statefulset
        )
    }
    pub fn database(s: &Settings) -> String {
        format!("postgres/{}:{}", s.target.host, s.target.port)
    }
    /// The backup role named by the target's Secret: two targets may share a primary, each
    /// with a role of its own (their cooldowns and locks are then separate).
    pub fn backup_role(s: &Settings) -> String {
        format!(
            "postgres/{}:{}/backup-role/{}/{}",
            s.target.host, s.target.port, s.kubernetes.namespace, s.kubernetes.backup_secret
        )
    }
    pub fn data_directory(s: &Settings) -> String {
        format!(
            "pod/{}/{}-0:/var/lib/postgresql/data",
            s.kubernetes.namespace, s.kubernetes.primary_statefulset
        )
    }
}

/// The plan for a diagnosis of `alertname` under `policy`: the playbook's steps with the
/// policy's decision on each. `None` when no playbook answers.
pub fn plan(alertname: &str, input: &PlanInput<'_>, policy: &Policy) -> Option<Vec<PlannedStep>> {
    let registry = registry();
    // An alert routed to no target is escalated whatever its name.
    let any_name = input.diagnosis.scenario == Scenario::NoTarget;
    let book = registry
        .iter()
        .find(|p| {
            (any_name || p.alertnames().contains(&alertname))
                && p.scenario() == input.diagnosis.scenario
        })
        .or_else(|| {
            registry
                .iter()
                .find(|p| p.any_scenario_of().contains(&alertname))
        })?;
    let mut steps = Vec::new();
    for (i, group) in book.groups(input).into_iter().enumerate() {
        for p in group {
            let (decision, note) = match p.kind {
                StepKind::Action => {
                    let d = policy.decide(p.name);
                    (d, policy_note(d, p.name))
                }
                // Verification reruns the backup: the rerun_backup policy governs it.
                StepKind::Verify => {
                    let d = policy.decide(ActionName::RerunBackup);
                    (d, policy_note(d, ActionName::RerunBackup))
                }
                // Read-only checks and telling people are not changes; under dry run they are
                // recorded like the rest.
                StepKind::Check if policy.dry_run => (Decision::DryRun, String::new()),
                StepKind::Check | StepKind::Escalate => (Decision::Auto, String::new()),
            };
            steps.push(PlannedStep {
                group: i as i32 + 1,
                kind: p.kind,
                name: p.name,
                target: p.target,
                decision,
                reason: format!("{}{note}", p.why),
            });
        }
    }
    Some(steps)
}

fn policy_note(d: Decision, action: ActionName) -> String {
    match d {
        Decision::Auto => String::new(),
        Decision::Approve => format!(" (policy: {action} needs an approval)"),
        Decision::Never => format!(" (policy: {action} is never run by the service)"),
        Decision::DryRun => " (dry run: recorded, not run)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::diagnosis::Diagnosis;

    fn diagnosis(scenario: Scenario) -> Diagnosis {
        Diagnosis {
            scenario,
            confidence: 0.95,
            summary: "s".into(),
            evidence: vec![],
            also: vec![],
            context: vec![],
        }
    }

    fn steps(scenario: Scenario, policy: &Policy) -> Vec<(i32, ActionName, Decision)> {
        steps_with(scenario, policy, Vec::new())
    }

    /// The plan when the database probe reported `signals`.
    fn steps_with(
        scenario: Scenario,
        policy: &Policy,
        signals: Vec<Signal>,
    ) -> Vec<(i32, ActionName, Decision)> {
        let settings = Settings::from_toml("").unwrap();
        let d = diagnosis(scenario);
        let findings = [Finding {
            probe: "database".into(),
            status: crate::domain::finding::Status::Problem,
            summary: String::new(),
            evidence: serde_json::json!({}),
            signals,
            started_at: chrono::Utc::now(),
            duration_ms: 1,
        }];
        let input = PlanInput {
            diagnosis: &d,
            findings: &findings,
            settings: &settings,
        };
        plan(BACKUP_FAILED, &input, policy)
            .unwrap()
            .into_iter()
            .map(|s| (s.group, s.name, s.decision))
            .collect()
    }

    fn live() -> Policy {
        Policy::defaults(false)
    }

    #[test]
    fn every_scenario_has_a_playbook_that_ends_in_escalation() {
        for scenario in [
            Scenario::BackupSchedule,
            Scenario::VersionMismatch,
            Scenario::DatabaseConnection,
            Scenario::Authentication,
            Scenario::Storage,
            Scenario::S3Access,
            Scenario::Encryption,
            Scenario::TransientUnknown,
            Scenario::NoTarget,
            Scenario::WalArchive,
            Scenario::Repository,
        ] {
            let s = steps(scenario, &live());
            assert_eq!(
                s.last().unwrap().1,
                ActionName::Escalate,
                "{scenario:?}: {s:?}"
            );
        }
    }

    #[test]
    fn a_cloudnativepg_target_escalates_with_the_operators_words() {
        let settings = Settings::from_toml(
            "[backup]\nsource = \"cloudnativepg\"\n[cloudnativepg]\ncluster = \"ledger-db\"",
        )
        .unwrap();
        let reason = |scenario: Scenario, signal: Signal| {
            let d = diagnosis(scenario);
            let findings = [Finding {
                probe: "cloudnativepg".into(),
                status: crate::domain::finding::Status::Problem,
                summary: String::new(),
                evidence: serde_json::json!({}),
                signals: vec![signal],
                started_at: chrono::Utc::now(),
                duration_ms: 1,
            }];
            let input = PlanInput {
                diagnosis: &d,
                findings: &findings,
                settings: &settings,
            };
            let steps = plan(BACKUP_FAILED, &input, &live()).unwrap();
            let last = steps.last().unwrap();
            assert_eq!(last.name, ActionName::Escalate);
            last.reason.clone()
        };
        let archive = reason(
            Scenario::WalArchive,
            Signal::ClusterArchivingFailing {
                cluster: "ledger-db".into(),
                reason: "ContinuousArchivingFailing".into(),
                message: "exit status 4".into(),
            },
        );
        assert!(
            archive.contains(
                "WAL archiving keeps failing: Cluster ledger-db: exit status 4. Fix the archive \
                 destination (then the Cluster's ContinuousArchiving condition turns True again)"
            ),
            "{archive}"
        );
        let suspended = reason(
            Scenario::BackupSchedule,
            Signal::ScheduledBackupSuspended {
                scheduled_backup: "nightly".into(),
            },
        );
        assert!(
            suspended.contains("kubectl -n link-services patch scheduledbackup/nightly"),
            "{suspended}"
        );
        let repo = Scenario::Repository;
        let failed = Signal::ClusterBackupFailed {
            cluster: "ledger-db".into(),
            backup: "b".into(),
            error: "e".into(),
        };
        let failed = reason(repo, failed);
        assert!(
            failed
                .contains("the backup repository needs a person (CloudNativePG Cluster ledger-db)"),
            "{failed}"
        );
    }

    #[test]
    fn authentication_repairs_the_role_then_verifies() {
        assert_eq!(
            steps(Scenario::Authentication, &live()),
            vec![
                (1, ActionName::RepairBackupRole, Decision::Auto),
                (1, ActionName::VerifyBackup, Decision::Auto),
                (2, ActionName::Escalate, Decision::Auto),
            ]
        );
    }

    #[test]
    fn connection_waits_then_asks_before_restarting_a_primary_that_gives_no_answer() {
        let down = Signal::DatabaseUnreachable {
            failure: crate::domain::finding::ConnectFailure::Refused,
            detail: "connection refused".into(),
        };
        let s = steps_with(Scenario::DatabaseConnection, &live(), vec![down]);
        assert_eq!(s[0], (1, ActionName::DatabaseAnswers, Decision::Auto));
        assert!(
            s.contains(&(2, ActionName::RestartPrimary, Decision::Approve)),
            "{s:?}"
        );
    }

    #[test]
    fn a_primary_that_answers_with_an_error_is_never_offered_a_restart() {
        for signal in [
            Signal::DatabaseConnectionFailed {
                database: "app".into(),
                code: Some("53300".into()),
                detail: "too many connections for role \"backup\"".into(),
            },
            Signal::DatabaseUnreachable {
                failure: crate::domain::finding::ConnectFailure::Other,
                detail: "TLS handshake failed".into(),
            },
        ] {
            let s = steps_with(Scenario::DatabaseConnection, &live(), vec![signal]);
            assert!(
                !s.iter().any(|x| x.1 == ActionName::RestartPrimary),
                "{s:?}"
            );
            assert_eq!(s.last().unwrap().1, ActionName::Escalate);
        }
    }

    #[test]
    fn storage_considers_deleting_files_and_refuses() {
        let s = steps(Scenario::Storage, &live());
        assert_eq!(s[0], (1, ActionName::ExpandPvc, Decision::Auto));
        assert!(
            s.contains(&(2, ActionName::DeleteOldFiles, Decision::Never)),
            "{s:?}"
        );
    }

    #[test]
    fn s3_encryption_schedule_and_versions_escalate_at_once() {
        for sc in [
            Scenario::S3Access,
            Scenario::Encryption,
            Scenario::BackupSchedule,
            Scenario::VersionMismatch,
        ] {
            assert_eq!(
                steps(sc, &live()),
                vec![(1, ActionName::Escalate, Decision::Auto)]
            );
        }
    }

    #[test]
    fn a_dry_run_marks_every_change_and_check() {
        let s = steps(Scenario::DatabaseConnection, &Policy::builtin());
        assert!(
            s.iter()
                .filter(|x| x.1 != ActionName::Escalate)
                .all(|x| x.2 == Decision::DryRun),
            "{s:?}"
        );
    }

    #[test]
    fn another_alert_has_no_playbook() {
        let settings = Settings::from_toml("").unwrap();
        let d = diagnosis(Scenario::Storage);
        let input = PlanInput {
            diagnosis: &d,
            findings: &[],
            settings: &settings,
        };
        assert!(plan("WALArchivingFailed", &input, &live()).is_none());
    }
}
