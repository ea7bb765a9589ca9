//! Scenario 5, encryption: key rotation is coordinated with security. Escalate at once with the
//! key problem found.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;

pub struct Encryption;

impl Playbook for Encryption {
    fn scenario(&self) -> Scenario {
        Scenario::Encryption
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        vec![vec![Proposed::escalate(format!(
            "the encryption key is coordinated with security; no automatic fix. {}",
            i.diagnosis.summary
        ))]]
    }
}
