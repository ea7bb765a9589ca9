//! The names of what a plan's steps do: the actions the policy governs, the read-only check, the
//! verification and the escalation. Stored and served as the strings they always were.

use super::names::string_enum;

string_enum!(
    /// What a step does, by name. The first five are the actions the policy governs
    /// ([`ActionName::GOVERNED`]); the rest are a check, the verification and the escalation.
    #[derive(PartialOrd, Ord)]
    pub ActionName "action" {
        /// Rerun the backup from the CronJob (the verification's policy name).
        RerunBackup => "rerun_backup",
        /// Recreate or repair the backup role.
        RepairBackupRole => "repair_backup_role",
        /// Grow the primary's data PVC.
        ExpandPvc => "expand_pvc",
        /// Roll the primary's StatefulSet.
        RestartPrimary => "restart_primary",
        /// Delete old files in the data directory: never run by the service.
        DeleteOldFiles => "delete_old_files",
        /// Check: the database answers the backup user's connection.
        DatabaseAnswers => "database_answers",
        /// Verify: rerun the backup from the CronJob, watch it, check the new object in S3.
        VerifyBackup => "verify_backup",
        /// Hand the incident to people.
        Escalate => "escalate",
    }
);

impl ActionName {
    /// The actions the policy governs (its `actions.*` keys), in the order docs/src/policy.md lists them.
    pub const GOVERNED: &'static [ActionName] = &[
        Self::RerunBackup,
        Self::RepairBackupRole,
        Self::ExpandPvc,
        Self::RestartPrimary,
        Self::DeleteOldFiles,
    ];

    /// Whether the policy governs this action (it has an `actions.<name>` entry).
    pub fn is_governed(self) -> bool {
        Self::GOVERNED.contains(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_stored_strings_and_unknown_ones_are_listed() {
        assert_eq!(ActionName::ExpandPvc.as_str(), "expand_pvc");
        assert_eq!(
            "verify_backup".parse::<ActionName>().unwrap(),
            ActionName::VerifyBackup
        );
        let err = "drop_database"
            .parse::<ActionName>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("drop_database") && err.contains("rerun_backup, "),
            "{err}"
        );
        assert!(!ActionName::VerifyBackup.is_governed());
        assert!(ActionName::DeleteOldFiles.is_governed());
    }
}
