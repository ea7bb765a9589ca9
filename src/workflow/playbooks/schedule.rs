//! Backup schedule: the CronJob is suspended, deleted, or never fires, so no backup runs and no
//! alert comes (the metric just ages or disappears). Someone may have suspended it on purpose,
//! and a deleted CronJob is a deployment's to restore: escalate at once with the command.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;
use crate::domain::finding::Signal;

pub struct BackupSchedule;

impl Playbook for BackupSchedule {
    fn scenario(&self) -> Scenario {
        Scenario::BackupSchedule
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        let ns = &i.settings.kubernetes.namespace;
        let todo: Vec<String> = i
            .findings
            .iter()
            .flat_map(|f| &f.signals)
            .filter_map(|s| match s {
                Signal::CronJobSuspended { cronjob } => Some(format!(
                    "resume it if the suspension is not deliberate: kubectl -n {ns} patch cronjob/{cronjob} -p '{{\"spec\":{{\"suspend\":false}}}}'"
                )),
                Signal::ScheduledBackupSuspended { scheduled_backup } => Some(format!(
                    "resume it if the suspension is not deliberate: kubectl -n {ns} patch scheduledbackup/{scheduled_backup} --type merge -p '{{\"spec\":{{\"suspend\":false}}}}'"
                )),
                Signal::CronJobMissing { cronjob } => Some(format!(
                    "re-apply the manifest of CronJob {cronjob} in {ns} (it was deleted)"
                )),
                Signal::ScheduleNotFiring { cronjob, .. } => Some(format!(
                    "check the schedule, startingDeadlineSeconds and the events of CronJob {cronjob}: kubectl -n {ns} describe cronjob/{cronjob}"
                )),
                _ => None,
            })
            .collect();
        vec![vec![Proposed::escalate(format!(
            "no backup runs: {}. {}",
            todo.join("; "),
            i.diagnosis.summary
        ))]]
    }
}
