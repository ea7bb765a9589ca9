//! The backup source of a target (`[backup]`), the pgBackRest source's settings (`[pgbackrest]`),
//! the CloudNativePG source's (`[cloudnativepg]`) and the WAL-archive guard (`[wal_archive]`). Each is overridable per `[[targets]]` entry, so
//! one service can guard a pg_dump CronJob and a pgBackRest stanza side by side.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{ConfigError, Settings};
use crate::domain::source::BackupSource;

/// `[backup]`: how the target's backups are taken.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// `pg_dump_cronjob` (the runbook's, the default), `pgbackrest` or `cloudnativepg`.
    pub source: String,
}

/// `[pgbackrest]`: the stanza the service reads with `pgbackrest info` and `pgbackrest check`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgBackRestSettings {
    /// The pgbackrest program (a path, or a name looked up in PATH).
    pub binary: String,
    /// The pgbackrest configuration file (`--config`); empty: pgbackrest's own default.
    pub config: String,
    /// The stanza (`--stanza`); required with `backup.source = "pgbackrest"`.
    pub stanza: String,
    /// The repository to read (`--repo`), 1 to 256.
    pub repo: u32,
    /// Deadline of one pgbackrest command, and of the probe that runs them.
    pub deadline_ms: u64,
    /// PromQL giving the Unix time of the last successful backup by the metric the alerts use;
    /// the newest of its series is cross-checked against the repository. Empty: no cross-check.
    pub freshness_metric: String,
    /// The restore test's scratch data directories are made under this directory (it must be
    /// writable by the user that runs pgbackrest and pg_ctl); empty: the system's temp dir.
    pub restore_dir: String,
    /// The `pg_ctl` that starts the scratch server (a path, or a name in PATH).
    pub pg_ctl: String,
    /// A command prefix for `pgbackrest restore` and `pg_ctl` (e.g. `["runuser", "-u",
    /// "postgres", "--"]` when the service is not the database's OS user); empty: none.
    pub run_as: Vec<String>,
    /// The role the restore checks connect as on the scratch server (the cluster's superuser,
    /// over loopback as the restored pg_hba.conf allows).
    pub restore_user: String,
}

/// `[cloudnativepg]`: the CloudNativePG `Cluster` whose backups the service reads (in
/// `kubernetes.namespace`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudNativePgSettings {
    /// The `Cluster`'s name; required with `backup.source = "cloudnativepg"`.
    pub cluster: String,
}

/// `[wal_archive]`: the WAL-archive guard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalArchiveSettings {
    /// Look at `pg_stat_archiver` of every target that has a `database_url`.
    pub enabled: bool,
    /// How often (top-level setting: one guard for all targets).
    pub interval_seconds: u64,
    /// Archiving must have kept failing this long before an incident opens.
    pub failing_minutes: u64,
    /// A connection to the target's primary as a role with `pg_monitor` (and, to read the
    /// server log for the cause, `pg_read_server_files`); empty: the target is not guarded.
    pub database_url: SecretString,
    /// A local path on the volume that holds `pg_wal` (the service runs beside the primary, as
    /// pgBackRest's `check` does); empty: the forecast says the volume is unknown.
    pub volume_path: String,
}

impl Settings {
    /// The target's backup source (validated at start-up).
    pub fn source(&self) -> BackupSource {
        BackupSource::parse(&self.backup.source).unwrap_or(BackupSource::PgDumpCronJob)
    }

    /// Checks `[backup]`, `[pgbackrest]`, `[cloudnativepg]` and `[wal_archive]`.
    pub(super) fn validate_sources(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        let source = match BackupSource::parse(&self.backup.source) {
            Ok(s) => s,
            Err(e) => return bad("backup.source", &e.to_string()),
        };
        let p = &self.pgbackrest;
        if source == BackupSource::PgBackRest {
            let stanza_ok = !p.stanza.is_empty()
                && p.stanza.len() <= 64
                && p.stanza
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !stanza_ok {
                return bad(
                    "pgbackrest.stanza",
                    "backup.source is pgbackrest: name the stanza (letters, digits, - _ .)",
                );
            }
            if p.binary.trim().is_empty() {
                return bad("pgbackrest.binary", "must name the pgbackrest program");
            }
        }
        if source == BackupSource::CloudNativePg && !is_object_name(&self.cloudnativepg.cluster) {
            return bad(
                "cloudnativepg.cluster",
                "backup.source is cloudnativepg: name the Cluster (a Kubernetes object name: \
                 lower-case letters, digits, - and ., at most 253)",
            );
        }
        if !(1..=256).contains(&p.repo) {
            return bad("pgbackrest.repo", "must be 1 to 256");
        }
        if p.deadline_ms < 100 {
            return bad("pgbackrest.deadline_ms", "must be at least 100");
        }
        let w = &self.wal_archive;
        if w.interval_seconds == 0 || w.interval_seconds > 3600 {
            return bad("wal_archive.interval_seconds", "must be 1 to 3600");
        }
        if w.failing_minutes == 0 || w.failing_minutes > 24 * 60 {
            return bad("wal_archive.failing_minutes", "must be 1 to 1440");
        }
        let url = w.database_url.expose_secret();
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad(
                "wal_archive.database_url",
                "must be empty or start with postgres:// or postgresql://",
            );
        }
        let wal = crate::domain::alert::WAL_ARCHIVE_FAILING;
        if w.enabled && !url.is_empty() && !self.alerts.handled.iter().any(|a| a == wal) {
            return Err(ConfigError::Invalid(format!(
                "wal_archive.enabled: the guard opens {wal} incidents; add {wal} to alerts.handled or set wal_archive.enabled = false"
            )));
        }
        Ok(())
    }
}

/// Whether `name` is a valid Kubernetes object name (an RFC 1123 DNS subdomain).
fn is_object_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(toml: &str) -> String {
        Settings::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn the_default_source_is_the_runbooks_pg_dump_cronjob() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.source(), BackupSource::PgDumpCronJob);
        assert_eq!(s.fleet[0].settings.source(), BackupSource::PgDumpCronJob);
    }

    #[test]
    fn each_target_has_its_own_source() {
        let s = Settings::from_toml(
            r#"
[[targets]]
name = "billing"
match = { namespace = "billing" }

[[targets]]
name = "ledger"
match = { namespace = "ledger" }
[targets.backup]
source = "pgbackrest"
[targets.pgbackrest]
stanza = "ledger"
config = "/etc/pgbackrest/ledger.conf"
"#,
        )
        .unwrap();
        let billing = s.target_named("billing").unwrap();
        let ledger = s.target_named("ledger").unwrap();
        assert_eq!(billing.settings.source(), BackupSource::PgDumpCronJob);
        assert_eq!(ledger.settings.source(), BackupSource::PgBackRest);
        assert_eq!(ledger.settings.pgbackrest.stanza, "ledger");
        assert_eq!(ledger.settings.pgbackrest.binary, "pgbackrest", "inherited");
        let cnpg = Settings::from_toml(
            "[backup]\nsource = \"cloudnativepg\"\n[cloudnativepg]\ncluster = \"ledger-db\"",
        )
        .unwrap();
        assert_eq!(cnpg.source(), BackupSource::CloudNativePg);
        assert_eq!(cnpg.cloudnativepg.cluster, "ledger-db");
    }

    #[test]
    fn start_up_stops_on_a_source_it_cannot_read_naming_the_target() {
        let target = |section: &str| {
            format!("[[targets]]\nname = \"ledger\"\nmatch = {{ namespace = \"l\" }}\n{section}")
        };
        let cases = [
            (
                target("[targets.backup]\nsource = \"pgbackrst\""),
                "targets[0] (\"ledger\"): invalid configuration: backup.source: unknown backup \
                 source \"pgbackrst\"; known: pg_dump_cronjob, pgbackrest, cloudnativepg",
            ),
            (
                target("[targets.backup]\nsource = \"cloudnativepg\""),
                "targets[0] (\"ledger\"): invalid configuration: cloudnativepg.cluster: \
                 backup.source is cloudnativepg: name the Cluster",
            ),
            (
                target(
                    "[targets.backup]\nsource = \"cloudnativepg\"\n\
                     [targets.cloudnativepg]\ncluster = \"Ledger_DB\"",
                ),
                "cloudnativepg.cluster: backup.source is cloudnativepg: name the Cluster",
            ),
            (
                target("[targets.backup]\nsource = \"pgbackrest\""),
                "targets[0] (\"ledger\"): invalid configuration: pgbackrest.stanza: backup.source \
                 is pgbackrest: name the stanza",
            ),
            (
                "[backup]\nsource = \"cloudnativepg\"".to_owned(),
                "cloudnativepg.cluster: backup.source is cloudnativepg: name the Cluster",
            ),
            (
                "[wal_archive]\ndatabase_url = \"mysql://x\"".to_owned(),
                "wal_archive.database_url: must be empty or start with postgres://",
            ),
            (
                "[alerts]\nhandled = [\"PostgreSQLBackupFailed\", \"PostgreSQLBackupStale\"]\n\
                 [wal_archive]\ndatabase_url = \"postgres://x@h/db\""
                    .to_owned(),
                "wal_archive.enabled: the guard opens PostgreSQLWALArchiveFailing incidents",
            ),
        ];
        for (toml, want) in cases {
            let got = error(&toml);
            assert!(got.contains(want), "{toml}\n→ {got}\nwanted: {want}");
        }
    }
}
