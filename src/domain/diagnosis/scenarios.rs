//! The scenarios a diagnosis names: the runbook's, and those the service adds beyond it.

use utoipa::ToSchema;

use crate::domain::names::string_enum;

string_enum!(
    /// The scenarios: the runbook's five, the transient case, and two silent failures the service
    /// finds beyond the runbook (a schedule that never runs, a pg_dump older than the server). The
    /// order is the order in which a backup run meets them: the earliest broken step wins a tie.
    #[derive(PartialOrd, Ord, ToSchema)]
    pub Scenario "scenario" {
        /// The backup never starts: the CronJob is suspended, deleted, or its schedule never fires.
        BackupSchedule => "backup_schedule",
        /// 1: connection refused / timeout / host unreachable.
        DatabaseConnection => "database_connection",
        /// 2: authentication failed / role does not exist / permission denied.
        Authentication => "authentication",
        /// pg_dump older than the server: it aborts with `server version mismatch`.
        VersionMismatch => "version_mismatch",
        /// 3: no space left on device / disk full.
        Storage => "storage",
        /// 5: encryption failed / invalid key / openssl error.
        Encryption => "encryption",
        /// 4: access denied / bucket does not exist / invalid credentials.
        S3Access => "s3_access",
        /// WAL archiving keeps failing: pg_wal grows until the volume fills (pgBackRest, or any
        /// primary with archive_mode on).
        WalArchive => "wal_archive",
        /// The backup repository (a pgBackRest stanza) is unhealthy or its check fails.
        Repository => "backup_repository",
        /// Every probe healthy, or nothing explains the failure.
        TransientUnknown => "transient_unknown",
        /// The alert names no configured target (or several): nothing was probed or changed.
        NoTarget => "no_target",
    }
);

impl Scenario {
    /// The runbook's number for the scenario (none for those beyond the runbook).
    pub fn number(self) -> Option<u8> {
        match self {
            Scenario::BackupSchedule | Scenario::VersionMismatch => None,
            Scenario::DatabaseConnection => Some(1),
            Scenario::Authentication => Some(2),
            Scenario::Storage => Some(3),
            Scenario::S3Access => Some(4),
            Scenario::Encryption => Some(5),
            Scenario::TransientUnknown
            | Scenario::NoTarget
            | Scenario::WalArchive
            | Scenario::Repository => None,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::BackupSchedule => "backup schedule",
            Scenario::VersionMismatch => "client/server version mismatch",
            Scenario::DatabaseConnection => "database connection",
            Scenario::Authentication => "authentication",
            Scenario::Storage => "storage",
            Scenario::S3Access => "S3 access",
            Scenario::WalArchive => "WAL archiving",
            Scenario::Repository => "backup repository",
            Scenario::Encryption => "encryption",
            Scenario::TransientUnknown => "transient or unknown",
            Scenario::NoTarget => "no target matched",
        }
    }

    /// Whether a matching log line alone settles the scenario, ahead of what other probes found:
    /// pg_dump's `server version mismatch` is its own unambiguous statement of why it stopped
    /// (it has connected and logged in by then).
    pub fn log_is_decisive(self) -> bool {
        self == Scenario::VersionMismatch
    }
}
