//! The backup repository (a pgBackRest stanza, or a CloudNativePG Cluster's object store) is
//! unhealthy, its check fails, or the newest backup failed: the repository and its storage belong
//! to the people who run it. Escalate at once with what `pgbackrest info` and `check`, or the
//! failed `Backup`, said; the service changes nothing in a repository.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;
use crate::domain::source::BackupSource;

pub struct Repository;

impl Playbook for Repository {
    fn scenario(&self) -> Scenario {
        Scenario::Repository
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        let what = match i.settings.source() {
            BackupSource::CloudNativePg => {
                format!("CloudNativePG Cluster {}", i.settings.cloudnativepg.cluster)
            }
            _ => format!("stanza {}", i.settings.pgbackrest.stanza),
        };
        vec![vec![Proposed::escalate(format!(
            "the backup repository needs a person ({what}); nothing in it was changed. {}",
            i.diagnosis.summary
        ))]]
    }
}
