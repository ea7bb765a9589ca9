//! Transient or unknown: every probe is healthy now. Rerun the backup once; a second failure
//! escalates.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;

pub struct Transient;

impl Playbook for Transient {
    fn scenario(&self) -> Scenario {
        Scenario::TransientUnknown
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        vec![
            vec![Proposed::verify(i.settings)],
            vec![Proposed::escalate(
                "the backup failed again with every probe healthy",
            )],
        ]
    }
}
