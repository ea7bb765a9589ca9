//! Scenario 1, database connection: wait for the database to answer again and rerun the backup
//! (often transient); else restart the primary — the runbook's "CAREFUL!", approval by default.

use super::{targets, PlanInput, Playbook, Proposed, CHECK_DATABASE_ANSWERS};
use crate::domain::diagnosis::Scenario;
use crate::domain::policy::RESTART_PRIMARY;

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
        vec![
            vec![
                Proposed::check(CHECK_DATABASE_ANSWERS, targets::database(s), wait.clone()),
                Proposed::verify(s),
            ],
            vec![
                Proposed::action(
                    RESTART_PRIMARY,
                    targets::statefulset(s),
                    "rollout restart of the primary StatefulSet (the runbook's CAREFUL! step)",
                ),
                Proposed::check(CHECK_DATABASE_ANSWERS, targets::database(s), wait),
                Proposed::verify(s),
            ],
            vec![Proposed::escalate(
                "the database still does not answer the backup job",
            )],
        ]
    }
}
