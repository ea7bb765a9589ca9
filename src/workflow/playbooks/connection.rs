//! Scenario 1, database connection: wait for the database to answer again and rerun the backup
//! (often transient); else restart the primary — the runbook's "CAREFUL!", approval by default —
//! but only when the primary gives no answer at all ([`Signal::means_primary_down`]): a server
//! that answers (too many connections, starting up) is up, and a restart would only cut off
//! everyone else.

use super::{targets, PlanInput, Playbook, Proposed};
use crate::domain::action::ActionName;
use crate::domain::diagnosis::Scenario;
use crate::domain::finding::Signal;

pub struct Connection;

impl Playbook for Connection {
    fn scenario(&self) -> Scenario {
        Scenario::DatabaseConnection
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        let s = i.settings;
        let wait = format!(
            "wait up to {} s for the database to answer the backup user again",
            s.remediation.database_wait_seconds
        );
        let mut groups = vec![vec![
            Proposed::check(
                ActionName::DatabaseAnswers,
                targets::database(s),
                wait.clone(),
            ),
            Proposed::verify(s),
        ]];
        if i.has_signal(Signal::means_primary_down) {
            groups.push(vec![
                Proposed::action(
                    ActionName::RestartPrimary,
                    targets::statefulset(s),
                    "rollout restart of the primary StatefulSet (the runbook's CAREFUL! step)",
                ),
                Proposed::check(ActionName::DatabaseAnswers, targets::database(s), wait),
                Proposed::verify(s),
            ]);
            groups.push(vec![Proposed::escalate(
                "the database still does not answer the backup job",
            )]);
        } else {
            groups.push(vec![Proposed::escalate(
                "the primary answers but does not let the backup user in; a restart would not help",
            )]);
        }
        groups
    }
}
