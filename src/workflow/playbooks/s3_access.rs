//! Scenario 4, S3 access: IAM and bucket policy belong to security. Escalate at once with what
//! is denied, by which policy.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;

pub struct S3Access;

impl Playbook for S3Access {
    fn scenario(&self) -> Scenario {
        Scenario::S3Access
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        vec![vec![Proposed::escalate(format!(
            "S3 access is owned by security; no automatic fix. {}",
            i.diagnosis.summary
        ))]]
    }
}
