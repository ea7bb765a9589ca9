//! Client/server version mismatch: the backup image's pg_dump is older than the server, so
//! every backup aborts. Changing the CronJob's image is a deployment decision (and the image
//! must be pulled and trusted): escalate at once with the exact change to make.

use super::{PlanInput, Playbook, Proposed};
use crate::domain::diagnosis::Scenario;
use crate::domain::finding::Signal;

pub struct VersionMismatch;

impl Playbook for VersionMismatch {
    fn scenario(&self) -> Scenario {
        Scenario::VersionMismatch
    }

    fn groups(&self, i: &PlanInput<'_>) -> Vec<Vec<Proposed>> {
        let k = &i.settings.kubernetes;
        let signals = || i.findings.iter().flat_map(|f| &f.signals);
        let change = signals()
            .find_map(|s| match s {
                Signal::ClientOlderThanServer {
                    suggested_image, ..
                } => Some(format!(
                    "set the backup CronJob's image to {suggested_image}: \
                     kubectl -n {} set image cronjob/{} '*={suggested_image}'",
                    k.namespace, k.backup_cronjob
                )),
                _ => None,
            })
            .or_else(|| {
                signals().find_map(|s| match s {
                    Signal::ClientVersionUnknown {
                        server_major: Some(m),
                        ..
                    } => Some(format!(
                        "give the backup CronJob {} an image whose pg_dump is PostgreSQL {m} \
                         or newer (e.g. postgres:{m}-alpine)",
                        k.backup_cronjob
                    )),
                    _ => None,
                })
            })
            .unwrap_or_else(|| {
                format!(
                    "give the backup CronJob {} an image whose pg_dump is at least the server's \
                     major version",
                    k.backup_cronjob
                )
            });
        vec![vec![Proposed::escalate(format!(
            "pg_dump is older than the server; the fix is a change to the backup image: {change}. {}",
            i.diagnosis.summary
        ))]]
    }
}
