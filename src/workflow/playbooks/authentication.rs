//! Scenario 2, authentication: create the missing backup role or reset its drifted password
//! from the Secret, grant CONNECT and read access, then verify. Other roles are never touched.

use super::{targets, PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;
use crate::domain::policy::REPAIR_BACKUP_ROLE;

pub struct Authentication;

impl Playbook for Authentication {
    fn scenario(&self) -> Scenario {
        Scenario::Authentication
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        let s = i.settings;
        vec![
            vec![
                Proposed::action(
                    REPAIR_BACKUP_ROLE,
                    targets::backup_role(s),
                    "create or repair the backup role from the Secret and grant CONNECT and read access",
                ),
                Proposed::verify(s),
            ],
            vec![Proposed::escalate(
                "the backup role could not be repaired, or the backup still fails",
            )],
        ]
    }
}
