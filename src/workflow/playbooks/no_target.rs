//! No target: the alert's labels name no configured target, or several. Nothing was probed and
//! nothing may be changed (acting on the wrong database is the one thing worse than not acting):
//! escalate at once, saying why and which targets exist.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;

pub struct NoTarget;

impl Playbook for NoTarget {
    fn scenario(&self) -> Scenario {
        Scenario::NoTarget
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        vec![vec![Proposed::escalate(format!(
            "{}; nothing was probed or changed",
            i.diagnosis.summary
        ))]]
    }
}
