//! The operator's safety policy: per action `auto`, `approve` or `never`; dry run; a cap on
//! attempts per incident; a cooldown per action and target; a budget of starts per rolling
//! window across all incidents and replicas; limits on PVC growth; the flapping breaker. Pure
//! data and decisions; read from a TOML file (`remediation.policy_file`). Without a file the
//! built-in policy applies **in dry-run mode**: nothing is changed until an operator writes a
//! policy. The action gate consults the policy in force when a step is about to run, not the
//! decision recorded when the plan was made.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::action::ActionName;
use crate::domain::plan::Decision;

/// How an action may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Auto,
    Approve,
    Never,
}

/// One action's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionPolicy {
    pub mode: Mode,
    /// The same action on the same target does not start again within this time (any incident).
    #[serde(default)]
    pub cooldown_minutes: u64,
    /// The action starts at most this many times per `budget_window_minutes`, across every
    /// incident and replica (signed so that a negative value is reported, not misparsed).
    pub budget: i64,
    /// The rolling window of the budget.
    pub budget_window_minutes: i64,
}

/// The flapping breaker: an alert (by fingerprint) that opened `incidents` incidents within
/// `window_minutes` gets its next incident diagnosed and escalated without any action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flapping {
    pub incidents: i64,
    pub window_minutes: i64,
}

/// Limits on what an action may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The data PVC is never requested larger than this (Kubernetes quantity, e.g. "500Gi").
    pub pvc_ceiling: String,
    /// One expansion adds this much (quantity, e.g. "50Gi").
    pub pvc_growth_step: String,
}

/// Manual backups (`POST /api/v1/backups`, the `backup` CLI): each is a pg_dump of every
/// database against the primary, so they have a budget too, across all replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualBackups {
    /// At most this many manual backups start per `budget_window_minutes`.
    pub budget: i64,
    pub budget_window_minutes: i64,
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Plan and record every step, change nothing.
    pub dry_run: bool,
    /// Each action starts at most this many times per incident.
    pub max_attempts_per_incident: u32,
    /// An approval not given within this time refuses the step (and escalates).
    pub approval_timeout_minutes: u64,
    /// Keyed by [`ActionName::GOVERNED`] names (checked when the policy is read).
    pub actions: BTreeMap<String, ActionPolicy>,
    pub limits: Limits,
    pub flapping: Flapping,
    pub manual_backups: ManualBackups,
    /// Where this policy came from, for the record.
    #[serde(skip)]
    pub source: String,
}

/// The policy is unusable; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid policy {source_name}: {message}")]
pub struct PolicyError {
    pub source_name: String,
    pub message: String,
}

fn action(
    mode: Mode,
    cooldown_minutes: u64,
    budget: i64,
    budget_window_minutes: i64,
) -> ActionPolicy {
    ActionPolicy {
        mode,
        cooldown_minutes,
        budget,
        budget_window_minutes,
    }
}

impl Policy {
    /// The defaults of the table in docs/src/policy.md, with `dry_run` as given.
    pub fn defaults(dry_run: bool) -> Self {
        Self {
            dry_run,
            max_attempts_per_incident: 3,
            approval_timeout_minutes: 60,
            actions: BTreeMap::from([
                (
                    ActionName::RerunBackup.as_str().to_owned(),
                    action(Mode::Auto, 0, 4, 60),
                ),
                (
                    ActionName::RepairBackupRole.as_str().to_owned(),
                    action(Mode::Auto, 10, 2, 60),
                ),
                (
                    ActionName::ExpandPvc.as_str().to_owned(),
                    action(Mode::Auto, 360, 1, 360),
                ),
                (
                    ActionName::RestartPrimary.as_str().to_owned(),
                    action(Mode::Approve, 60, 1, 60),
                ),
                (
                    ActionName::DeleteOldFiles.as_str().to_owned(),
                    action(Mode::Never, 0, 1, 60),
                ),
            ]),
            limits: Limits {
                pvc_ceiling: "500Gi".to_owned(),
                pvc_growth_step: "50Gi".to_owned(),
            },
            flapping: Flapping {
                incidents: 3,
                window_minutes: 360,
            },
            manual_backups: ManualBackups {
                budget: 4,
                budget_window_minutes: 60,
            },
            source: String::new(),
        }
    }

    /// The policy when no file is given: the defaults, in dry-run mode.
    pub fn builtin() -> Self {
        Self {
            source: "built-in (no policy file: dry run)".to_owned(),
            ..Self::defaults(true)
        }
    }

    /// Reads a policy file over the defaults (with `dry_run = false` unless the file says so).
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        if !path.exists() {
            return Err(PolicyError {
                source_name: name,
                message: "the file does not exist".to_owned(),
            });
        }
        Self::from_figment(
            Figment::from(Serialized::defaults(Self::defaults(false))).merge(Toml::file(path)),
            &name,
        )
    }

    /// This policy with a target's overrides laid over it (`[targets.policy]`), checked like a
    /// policy file; `source` names both.
    pub fn with_overrides(
        &self,
        overrides: &figment::value::Dict,
        target: &str,
    ) -> Result<Self, PolicyError> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        Self::from_figment(
            Figment::from(Serialized::defaults(self.clone()))
                .merge(Serialized::defaults(overrides.clone())),
            &format!("{} + targets {target:?} policy", self.source),
        )
    }

    /// Parses policy TOML over the defaults (tests, examples).
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Self::defaults(false))).merge(Toml::string(text)),
            "(inline)",
        )
    }

    fn from_figment(fig: Figment, name: &str) -> Result<Self, PolicyError> {
        let err = |message: String| PolicyError {
            source_name: name.to_owned(),
            message,
        };
        let mut p: Policy = fig.extract().map_err(|e| {
            err(e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "))
        })?;
        p.source = name.to_owned();
        for key in p.actions.keys() {
            if !key.parse::<ActionName>().is_ok_and(ActionName::is_governed) {
                let known: Vec<_> = ActionName::GOVERNED.iter().map(|a| a.as_str()).collect();
                return Err(err(format!(
                    "actions.{key}: unknown action; known: {}",
                    known.join(", ")
                )));
            }
        }
        if p.mode(ActionName::DeleteOldFiles) != Mode::Never {
            return Err(err(
                "actions.delete_old_files: can only be \"never\": the service does not delete \
                 files in a database's data directory; do it by hand after reading the plan"
                    .to_owned(),
            ));
        }
        if p.mode(ActionName::RestartPrimary) == Mode::Auto {
            return Err(err(
                "actions.restart_primary.mode: can only be \"approve\" or \"never\": restarting \
                 the primary interrupts every client of the database, so a person decides"
                    .to_owned(),
            ));
        }
        for (key, a) in &p.actions {
            if a.budget <= 0 {
                return Err(err(format!(
                    "actions.{key}.budget: must be at least 1 (use mode = \"never\" to stop the action)"
                )));
            }
            if a.budget_window_minutes <= 0 {
                return Err(err(format!(
                    "actions.{key}.budget_window_minutes: must be at least 1"
                )));
            }
        }
        if p.manual_backups.budget <= 0 {
            return Err(err("manual_backups.budget: must be at least 1".to_owned()));
        }
        if p.manual_backups.budget_window_minutes <= 0 {
            return Err(err(
                "manual_backups.budget_window_minutes: must be at least 1".to_owned(),
            ));
        }
        if p.flapping.incidents <= 0 {
            return Err(err("flapping.incidents: must be at least 1".to_owned()));
        }
        if p.flapping.window_minutes <= 0 {
            return Err(err("flapping.window_minutes: must be at least 1".to_owned()));
        }
        if p.max_attempts_per_incident == 0 {
            return Err(err(
                "max_attempts_per_incident: must be at least 1".to_owned()
            ));
        }
        let ceiling = crate::domain::quantity::parse(&p.limits.pvc_ceiling).ok_or_else(|| {
            err(format!(
                "limits.pvc_ceiling: {:?} is not a quantity",
                p.limits.pvc_ceiling
            ))
        })?;
        let step = crate::domain::quantity::parse(&p.limits.pvc_growth_step).ok_or_else(|| {
            err(format!(
                "limits.pvc_growth_step: {:?} is not a quantity",
                p.limits.pvc_growth_step
            ))
        })?;
        if step == 0 || step > ceiling {
            return Err(err(
                "limits.pvc_growth_step: must be more than 0 and at most the ceiling".to_owned(),
            ));
        }
        Ok(p)
    }

    /// The mode of `action`; an action the file does not list keeps its default.
    pub fn mode(&self, action: ActionName) -> Mode {
        // The defaults are merged under the file, so every known action is present; anything
        // else is refused.
        self.actions
            .get(action.as_str())
            .map_or(Mode::Never, |a| a.mode)
    }

    /// The cooldown of `action` on one target.
    pub fn cooldown(&self, action: ActionName) -> Duration {
        Duration::from_secs(
            self.actions
                .get(action.as_str())
                .map_or(0, |a| a.cooldown_minutes)
                * 60,
        )
    }

    /// At most how many starts of `action` per window, across incidents and replicas.
    pub fn budget(&self, action: ActionName) -> (i64, Duration) {
        self.actions
            .get(action.as_str())
            .map_or((0, Duration::ZERO), |a| {
                (
                    a.budget,
                    Duration::from_secs(u64::try_from(a.budget_window_minutes).unwrap_or(0) * 60),
                )
            })
    }

    /// The flapping breaker's window.
    pub fn flapping_window(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.flapping.window_minutes).unwrap_or(0) * 60)
    }

    /// The decision for a step that runs `action`, under this policy (at plan time for the
    /// record; the gate asks again right before the step runs).
    pub fn decide(&self, action: ActionName) -> Decision {
        if self.dry_run {
            return Decision::DryRun;
        }
        match self.mode(action) {
            Mode::Auto => Decision::Auto,
            Mode::Approve => Decision::Approve,
            Mode::Never => Decision::Never,
        }
    }

    /// How long an approval may wait.
    pub fn approval_timeout(&self) -> Duration {
        Duration::from_secs(self.approval_timeout_minutes * 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_file_the_policy_is_a_dry_run_of_the_defaults() {
        let p = Policy::builtin();
        assert!(p.dry_run);
        assert_eq!(p.decide(ActionName::RerunBackup), Decision::DryRun);
        assert_eq!(p.mode(ActionName::RestartPrimary), Mode::Approve);
        assert_eq!(p.mode(ActionName::DeleteOldFiles), Mode::Never);
    }

    #[test]
    fn a_file_changes_only_what_it_names_and_is_not_a_dry_run() {
        let p = Policy::from_toml("[actions.expand_pvc]\nmode = \"approve\"\ncooldown_minutes = 5")
            .unwrap();
        assert!(!p.dry_run);
        assert_eq!(p.decide(ActionName::ExpandPvc), Decision::Approve);
        assert_eq!(p.cooldown(ActionName::ExpandPvc), Duration::from_secs(300));
        assert_eq!(p.decide(ActionName::RerunBackup), Decision::Auto);
        assert_eq!(p.decide(ActionName::RestartPrimary), Decision::Approve);
        assert_eq!(p.decide(ActionName::DeleteOldFiles), Decision::Never);
    }

    #[test]
    fn deleting_files_can_never_be_allowed() {
        let err = Policy::from_toml("[actions.delete_old_files]\nmode = \"auto\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("delete_old_files"), "{err}");
    }

    #[test]
    fn the_example_policy_file_documents_the_defaults() {
        let example = Policy::from_toml(include_str!("../../config/policy.example.toml")).unwrap();
        assert_eq!(
            Policy {
                source: String::new(),
                ..example
            },
            Policy::defaults(false)
        );
    }

    #[test]
    fn restarting_the_primary_can_never_be_automatic() {
        let err = Policy::from_toml("[actions.restart_primary]\nmode = \"auto\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("actions.restart_primary.mode"), "{err}");
        assert!(Policy::from_toml("[actions.restart_primary]\nmode = \"never\"").is_ok());
    }

    #[test]
    fn budgets_default_to_the_readme_and_bad_ones_are_named() {
        let p = Policy::defaults(false);
        assert_eq!(
            p.budget(ActionName::RerunBackup),
            (4, Duration::from_secs(3600))
        );
        assert_eq!(
            p.budget(ActionName::RepairBackupRole),
            (2, Duration::from_secs(3600))
        );
        assert_eq!(
            p.budget(ActionName::ExpandPvc),
            (1, Duration::from_secs(6 * 3600))
        );
        assert_eq!(
            p.budget(ActionName::RestartPrimary),
            (1, Duration::from_secs(3600))
        );
        assert_eq!(
            (p.flapping.incidents, p.flapping_window()),
            (3, Duration::from_secs(6 * 3600))
        );
        let p = Policy::from_toml("[actions.rerun_backup]\nbudget = 10\n[flapping]\nincidents = 5")
            .unwrap();
        assert_eq!(p.budget(ActionName::RerunBackup).0, 10);
        assert_eq!(
            p.mode(ActionName::RerunBackup),
            Mode::Auto,
            "the rest of the action keeps its default"
        );
        assert_eq!(p.flapping.incidents, 5);
        for (toml, key) in [
            (
                "[actions.rerun_backup]\nbudget = 0",
                "actions.rerun_backup.budget",
            ),
            (
                "[actions.expand_pvc]\nbudget = -1",
                "actions.expand_pvc.budget",
            ),
            (
                "[actions.expand_pvc]\nbudget_window_minutes = 0",
                "actions.expand_pvc.budget_window_minutes",
            ),
            ("[actions.expand_pvc]\nbudgets = 3", "budgets"),
            ("[flapping]\nincidents = 0", "flapping.incidents"),
            ("[flapping]\nwindow = 60", "window"),
        ] {
            let err = Policy::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn unknown_actions_keys_and_bad_limits_are_named() {
        for (toml, key) in [
            ("[actions.drop_database]\nmode = \"auto\"", "drop_database"),
            (
                "[actions.database_answers]\nmode = \"auto\"\nbudget = 1\nbudget_window_minutes = 60",
                "actions.database_answers: unknown action",
            ),
            ("dryrun = true", "dryrun"),
            ("[limits]\npvc_ceiling = \"lots\"", "pvc_ceiling"),
            ("[limits]\npvc_growth_step = \"900Gi\"", "pvc_growth_step"),
            ("[actions.expand_pvc]\nmode = \"sometimes\"", "sometimes"),
        ] {
            let err = Policy::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }
}
