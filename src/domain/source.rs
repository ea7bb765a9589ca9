//! Backup sources: how a target's backups are taken, and so which probes, scenarios and
//! playbooks apply to it. `pg_dump_cronjob` is the runbook's (a CronJob running pg_dump to S3);
//! `pgbackrest` is a pgBackRest stanza the service reads with `pgbackrest info` and `check`;
//! `cloudnativepg` is a CloudNativePG `Cluster` whose status, `Backup`s and `ScheduledBackup`s
//! the service reads through the Kubernetes API.

use crate::domain::names::string_enum;

string_enum!(
    /// The backup sources a target may name (`backup.source`).
    pub BackupSource "backup source" {
        /// The runbook's: a Kubernetes CronJob runs pg_dump, encrypts and uploads to S3.
        PgDumpCronJob => "pg_dump_cronjob",
        /// A pgBackRest stanza: full/diff/incr backups and WAL archived by `archive-push`.
        PgBackRest => "pgbackrest",
        /// A CloudNativePG `Cluster`: barman-cloud backups taken by the operator.
        CloudNativePg => "cloudnativepg",
    }
);

/// Sources people may name that the service does not read yet: named so that start-up says so
/// instead of calling them unknown.
pub const NOT_YET: &[(&str, &str)] = &[];

/// Why a configured source cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0:?}: {1}")]
    NotSupportedYet(String, &'static str),
    #[error(transparent)]
    Unknown(#[from] crate::domain::names::UnknownName),
}

/// Probes that read the pg_dump CronJob, its Secret, its image and its S3 objects: they answer
/// nothing about another source.
const PG_DUMP_ONLY: &[&str] = &[
    "backup_metrics",
    "backup_job",
    "secret",
    "database",
    "versions",
    "s3",
    "iam",
    "encryption",
];

/// Probes of the pgBackRest source only.
const PGBACKREST_ONLY: &[&str] = &["pgbackrest"];

/// Probes of the CloudNativePG source only.
const CLOUDNATIVEPG_ONLY: &[&str] = &["cloudnativepg"];

/// Probes of sources that archive WAL (the pg_dump CronJob does not).
const WAL_ARCHIVING: &[&str] = &["wal_archive"];

impl BackupSource {
    /// Parses `backup.source`, naming a source that is planned but not supported yet.
    pub fn parse(text: &str) -> Result<Self, SourceError> {
        if let Some((name, why)) = NOT_YET.iter().find(|(n, _)| *n == text) {
            return Err(SourceError::NotSupportedYet((*name).to_owned(), why));
        }
        Ok(text.parse()?)
    }

    /// Whether the probe named `probe` asks a question about this source's backups.
    pub fn uses_probe(self, probe: &str) -> bool {
        match self {
            Self::PgDumpCronJob => ![PGBACKREST_ONLY, CLOUDNATIVEPG_ONLY, WAL_ARCHIVING]
                .concat()
                .contains(&probe),
            Self::PgBackRest => ![PG_DUMP_ONLY, CLOUDNATIVEPG_ONLY].concat().contains(&probe),
            Self::CloudNativePg => ![PG_DUMP_ONLY, PGBACKREST_ONLY].concat().contains(&probe),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_parses_and_a_typo_names_the_known_ones() {
        assert_eq!(
            BackupSource::parse("pgbackrest"),
            Ok(BackupSource::PgBackRest)
        );
        assert_eq!(
            BackupSource::parse("cloudnativepg"),
            Ok(BackupSource::CloudNativePg)
        );
        let typo = BackupSource::parse("pgbackrst").unwrap_err().to_string();
        assert_eq!(
            typo,
            "unknown backup source \"pgbackrst\"; known: pg_dump_cronjob, pgbackrest, cloudnativepg"
        );
    }

    #[test]
    fn each_source_keeps_only_the_probes_that_ask_about_it() {
        let pg_dump = BackupSource::PgDumpCronJob;
        assert!(pg_dump.uses_probe("backup_job") && pg_dump.uses_probe("disk"));
        assert!(!pg_dump.uses_probe("pgbackrest"));
        let rest = BackupSource::PgBackRest;
        assert!(rest.uses_probe("pgbackrest") && rest.uses_probe("wal_archive"));
        assert!(rest.uses_probe("primary") && rest.uses_probe("disk"));
        assert!(!rest.uses_probe("backup_job") && !rest.uses_probe("s3"));
        assert!(!rest.uses_probe("cloudnativepg") && !pg_dump.uses_probe("cloudnativepg"));
        let cnpg = BackupSource::CloudNativePg;
        assert!(cnpg.uses_probe("cloudnativepg") && cnpg.uses_probe("wal_archive"));
        assert!(!cnpg.uses_probe("pgbackrest") && !cnpg.uses_probe("backup_job"));
    }
}
