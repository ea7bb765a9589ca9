//! The backup repository (a pgBackRest stanza) is unhealthy or its check fails: the repository,
//! its stanza and its storage belong to the people who run pgBackRest. Escalate at once with
//! what `pgbackrest info` and `check` said; the service changes nothing in a repository.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;

pub struct Repository;

impl Playbook for Repository {
    fn scenario(&self) -> Scenario {
        Scenario::Repository
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        vec![vec![Proposed::escalate(format!(
            "the backup repository needs a person (stanza {}); nothing in it was changed. {}",
            i.settings.pgbackrest.stanza, i.diagnosis.summary
        ))]]
    }
}
