//! WAL archiving keeps failing: pg_wal grows until its volume fills and the primary stops. The
//! service never deletes WAL and never changes `archive_command` (either loses the ability to
//! recover to a point in time, or hides the failure): it escalates at once with the cause it
//! read and the forecast of when the volume fills. It answers the guard's
//! `PostgreSQLWALArchiveFailing` whatever the other probes found, and a backup alert whose
//! diagnosis is a failing archive.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::alert::{BACKUP_FAILED, BACKUP_STALE, WAL_ARCHIVE_FAILING};
use crate::domain::diagnosis::Scenario;
use crate::domain::finding::Signal;
use crate::domain::source::BackupSource;

pub struct WalArchive;

impl Playbook for WalArchive {
    fn alertnames(&self) -> &'static [&'static str] {
        &[WAL_ARCHIVE_FAILING, BACKUP_FAILED, BACKUP_STALE]
    }

    fn scenario(&self) -> Scenario {
        Scenario::WalArchive
    }

    fn any_scenario_of(&self) -> &'static [&'static str] {
        &[WAL_ARCHIVE_FAILING]
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        let read = i
            .findings
            .iter()
            .flat_map(|f| &f.signals)
            .find_map(|s| match s {
                Signal::WalArchiveFailing {
                    cause, forecast, ..
                } => Some(format!("{cause}; {forecast}")),
                Signal::ClusterArchivingFailing {
                    cluster, message, ..
                } => Some(format!("Cluster {cluster}: {message}")),
                _ => None,
            });
        let what = read.unwrap_or_else(|| i.diagnosis.summary.clone());
        let then = match i.settings.source() {
            BackupSource::CloudNativePg => {
                "the Cluster's ContinuousArchiving condition turns True again"
            }
            _ => "`pgbackrest check` shows it archives again",
        };
        vec![vec![Proposed::escalate(format!(
            "WAL archiving keeps failing: {what}. Fix the archive destination (then {then}); no \
             WAL was deleted and archive_command was not changed"
        ))]]
    }
}
