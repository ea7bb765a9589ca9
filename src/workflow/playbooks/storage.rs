//! Scenario 3, storage: expand the primary's data PVC when its StorageClass allows it (bounded
//! by the policy's ceiling), then verify. Deleting old files in the data directory is planned
//! only to show it was considered: policy can never allow it.

use super::{targets, PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;
use crate::domain::finding::Signal;
use crate::domain::policy::{DELETE_OLD_FILES, EXPAND_PVC};

pub struct Storage;

impl Playbook for Storage {
    fn scenario(&self) -> Scenario {
        Scenario::Storage
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        let s = i.settings;
        let mut groups = Vec::new();
        // The backup pod's own ephemeral storage is not the data volume: growing the PVC would
        // not help, so only a person can act (the Job's ephemeral-storage limit).
        let ephemeral_only = i
            .has_signal(|x| matches!(x, Signal::EphemeralStorageExhausted { .. }))
            && !i.has_signal(|x| matches!(x, Signal::VolumeOverThreshold { .. }));
        if !ephemeral_only {
            groups.push(vec![
                Proposed::action(
                    EXPAND_PVC,
                    targets::pvc(s),
                    "grow the data volume claim by the policy's step, within its ceiling",
                ),
                Proposed::verify(s),
            ]);
        }
        groups.push(vec![
            Proposed::action(
                DELETE_OLD_FILES,
                targets::data_directory(s),
                "the runbook's `find /var/lib/postgresql/data -name '*.backup' -mtime +7 -delete`",
            ),
            Proposed::verify(s),
        ]);
        groups.push(vec![Proposed::escalate(if ephemeral_only {
            "the backup pod ran out of ephemeral storage: raise the Job's ephemeral-storage limit"
        } else {
            "the storage problem could not be fixed automatically"
        })]);
        groups
    }
}
