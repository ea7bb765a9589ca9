//! The rules of a diagnosis: where each signal points, how strongly, and how it reads.

use std::collections::BTreeMap;

use super::{Scenario, Support};
use crate::domain::finding::{ConnectFailure, LogPattern, Signal};

/// Where a signal points, and how strongly (1.0 = established by a probe).
pub(super) fn direct_support(signal: &Signal) -> Option<(Scenario, f64)> {
    use Scenario::*;
    Some(match signal {
        Signal::DatabaseUnreachable { .. } | Signal::DatabaseConnectionFailed { .. } => {
            (DatabaseConnection, 1.0)
        }
        Signal::PrimaryNotReady { .. } => (DatabaseConnection, 0.8),
        Signal::DatabaseMissing { .. } => (DatabaseConnection, 0.7),
        Signal::AuthenticationFailed { .. }
        | Signal::RoleMissing { .. }
        | Signal::NoConnectPrivilege { .. }
        | Signal::NoReadAccess { .. } => (Authentication, 1.0),
        Signal::SecretMissing { .. } => (Authentication, 0.6),
        Signal::SecretKeyMissing { key } => match key.as_str() {
            "postgres-user" | "postgres-password" => (Authentication, 0.9),
            "encryption-key" => (Encryption, 0.9),
            _ => (S3Access, 0.9),
        },
        Signal::VolumeOverThreshold { .. } | Signal::EphemeralStorageExhausted { .. } => {
            (Storage, 1.0)
        }
        Signal::BucketMissing { .. }
        | Signal::S3InvalidCredentials { .. }
        | Signal::S3AccessDenied { .. } => (S3Access, 1.0),
        Signal::IamActionDenied { .. } => (S3Access, 0.9),
        Signal::KeyMissing | Signal::KeyTooShort { .. } | Signal::RoundTripFailed { .. } => {
            (Encryption, 1.0)
        }
        Signal::KeyMismatch { .. } => (Encryption, 0.7),
        Signal::CronJobSuspended { .. }
        | Signal::CronJobMissing { .. }
        | Signal::ScheduleNotFiring { .. } => (BackupSchedule, 1.0),
        Signal::ClientOlderThanServer { .. } => (VersionMismatch, 1.0),
        Signal::WalArchiveFailing { .. } | Signal::ClusterArchivingFailing { .. } => {
            (WalArchive, 1.0)
        }
        Signal::ClusterBackupFailed { .. } => (Repository, 1.0),
        Signal::ScheduledBackupSuspended { .. } => (BackupSchedule, 1.0),
        Signal::ClusterBackupStale { .. } => (BackupSchedule, 0.7),
        // pgBackRest's ArchiveTimeoutError: the check's WAL segment never reached the repository.
        Signal::RepositoryCheckFailed { code: Some(82), .. } => (WalArchive, 0.9),
        Signal::RepositoryUnhealthy { .. } | Signal::RepositoryCheckFailed { .. } => {
            (Repository, 1.0)
        }
        // A healthy repository whose newest backup is old: backups are not being taken.
        Signal::RepositoryBackupStale { .. } => (BackupSchedule, 0.7),
        Signal::BackupNeverReported
        | Signal::LastSuccessStale { .. }
        | Signal::BackupErrors { .. }
        | Signal::NoBackupJob
        | Signal::JobFailed { .. }
        | Signal::PodFailed { .. }
        | Signal::LogMatch { .. }
        | Signal::ClientVersionUnknown { .. }
        | Signal::RestoreClientOlder { .. }
        | Signal::FreshnessDisagreement { .. } => return None,
    })
}

const LOG_WEIGHT: f64 = 0.6;
const AMBIGUOUS_LOG_WEIGHT: f64 = 0.4;

/// Where a log pattern points, given what the probes found directly.
pub(super) fn log_support(
    pattern: LogPattern,
    direct: &BTreeMap<Scenario, Support>,
) -> (Scenario, f64) {
    use LogPattern as P;
    use Scenario::*;
    let found = |s: Scenario| direct.get(&s).is_some_and(|x| x.direct > 0.0);
    match pattern {
        P::ConnectionRefused | P::HostUnreachable => (DatabaseConnection, LOG_WEIGHT),
        P::Timeout if found(S3Access) && !found(DatabaseConnection) => {
            (S3Access, AMBIGUOUS_LOG_WEIGHT)
        }
        P::Timeout => (DatabaseConnection, AMBIGUOUS_LOG_WEIGHT),
        P::AuthenticationFailed | P::RoleDoesNotExist => (Authentication, LOG_WEIGHT),
        P::PermissionDenied => {
            for s in [Authentication, Storage, S3Access] {
                if found(s) {
                    return (s, LOG_WEIGHT);
                }
            }
            (Authentication, AMBIGUOUS_LOG_WEIGHT)
        }
        P::NoSpaceLeft | P::DiskFull => (Storage, LOG_WEIGHT),
        P::AccessDenied
        | P::BucketDoesNotExist
        | P::InvalidCredentials
        | P::AwsAccessDenied
        | P::AwsNoSuchBucket
        | P::AwsInvalidAccessKeyId
        | P::AwsSignatureDoesNotMatch => (S3Access, LOG_WEIGHT),
        P::EncryptionFailed | P::InvalidKey | P::OpensslError => (Encryption, LOG_WEIGHT),
        P::ServerVersionMismatch => (VersionMismatch, 1.0),
    }
}

/// A sentence for a signal; never contains a secret (signals hold none).
pub fn describe(signal: &Signal) -> String {
    match signal {
        Signal::BackupNeverReported => "the backup job never reported a successful backup".into(),
        Signal::LastSuccessStale { age_seconds } => {
            format!(
                "last successful backup {} ago",
                crate::domain::duration::human(*age_seconds)
            )
        }
        Signal::BackupErrors { increase } => {
            format!("{increase:.0} backup errors in the last 24 h")
        }
        Signal::NoBackupJob => "no backup Job found".into(),
        Signal::JobFailed { job, reason } => format!("Job {job} failed ({reason})"),
        Signal::PodFailed {
            pod,
            reason,
            message,
        } if message.is_empty() => format!("pod {pod}: {reason}"),
        Signal::PodFailed {
            pod,
            reason,
            message,
        } => format!("pod {pod}: {reason} ({message})"),
        Signal::LogMatch { line, .. } => format!("log: {line}"),
        Signal::SecretMissing { name } => format!("Secret {name} does not exist"),
        Signal::SecretKeyMissing { key } => format!("the backup Secret has no {key}"),
        Signal::DatabaseUnreachable { failure, detail } => {
            let what = match failure {
                ConnectFailure::Refused => "refused the connection",
                ConnectFailure::Timeout => "timed out",
                ConnectFailure::Dns => "name does not resolve",
                ConnectFailure::Unreachable => "host unreachable",
                ConnectFailure::Other => "could not be reached",
            };
            format!("the primary {what}: {detail}")
        }
        Signal::DatabaseConnectionFailed {
            database,
            code: Some(code),
            detail,
        } => format!(
            "the primary is up but refused the backup user's connection to {database} ({code}): {detail}"
        ),
        Signal::DatabaseConnectionFailed {
            database,
            code: None,
            detail,
        } => format!(
            "the connection to {database} failed while the primary answered for other databases: {detail}"
        ),
        Signal::AuthenticationFailed { role } => {
            format!("password authentication failed for role {role}")
        }
        Signal::RoleMissing { role } => format!("role {role} does not exist"),
        Signal::DatabaseMissing { database } => format!("database {database} does not exist"),
        Signal::NoConnectPrivilege { database } => {
            format!("no CONNECT privilege on database {database}")
        }
        Signal::NoReadAccess { database, tables } => {
            format!(
                "cannot read {} in {database}",
                tables
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        Signal::PrimaryNotReady { detail } => format!("primary not ready: {detail}"),
        Signal::VolumeOverThreshold {
            pvc,
            percent,
            threshold,
        } => {
            format!("data volume {pvc} is {percent}% full (threshold {threshold}%)")
        }
        Signal::EphemeralStorageExhausted { pod } => {
            format!("pod {pod} was evicted: out of ephemeral storage")
        }
        Signal::BucketMissing { bucket } => format!("bucket {bucket} does not exist"),
        Signal::S3InvalidCredentials { code } => {
            format!("S3 refused the job's credentials ({code})")
        }
        Signal::S3AccessDenied { operation } => {
            format!("S3 denied {operation} to the job's credentials")
        }
        Signal::IamActionDenied { action, resource } => {
            format!("the IAM policy does not allow {action} on {resource}")
        }
        Signal::KeyMissing => "the encryption key is missing".into(),
        Signal::KeyTooShort { length, minimum } => {
            format!("the encryption key is {length} bytes, shorter than {minimum}")
        }
        Signal::KeyMismatch { object } => {
            format!("the newest backup {object} does not decrypt with the current key")
        }
        Signal::RoundTripFailed { detail } => format!("encryption round trip failed: {detail}"),
        Signal::CronJobSuspended { cronjob } => {
            format!("CronJob {cronjob} is suspended: no backup runs until it is resumed")
        }
        Signal::CronJobMissing { cronjob } => {
            format!("CronJob {cronjob} does not exist: nothing schedules the backup")
        }
        Signal::ScheduleNotFiring { cronjob, detail } => {
            format!("CronJob {cronjob} does not fire: {detail}")
        }
        Signal::ClientOlderThanServer {
            image,
            client_major,
            server_major,
            suggested_image,
        } => format!(
            "the backup image {image} has pg_dump {client_major}, older than the server \
             (PostgreSQL {server_major}): set the CronJob's image to {suggested_image}"
        ),
        Signal::ClientVersionUnknown { image, .. } => {
            format!("the pg_dump version of the backup image {image} is unknown (not an official postgres:N tag)")
        }
        Signal::RestoreClientOlder {
            program,
            client_major,
            server_major,
        } => format!(
            "{program} {client_major} is older than the server (PostgreSQL {server_major}): restore tests of its backups will fail"
        ),
        Signal::RepositoryUnhealthy {
            stanza,
            code,
            message,
        } => format!("pgBackRest stanza {stanza}: status {code} ({message})"),
        Signal::RepositoryCheckFailed {
            stanza, message, ..
        } => format!("pgbackrest check of stanza {stanza} failed: {message}"),
        Signal::RepositoryBackupStale {
            stanza,
            age_seconds: Some(age),
            rpo_hours,
        } => format!(
            "the newest backup of stanza {stanza} in the repository is {} old (RPO {rpo_hours} h)",
            crate::domain::duration::human(*age)
        ),
        Signal::RepositoryBackupStale { stanza, .. } => {
            format!("the repository holds no valid backup of stanza {stanza}")
        }
        Signal::FreshnessDisagreement {
            metric_age_seconds,
            repository_age_seconds,
            rpo_hours,
        } => crate::domain::freshness::disagreement_words(
            *metric_age_seconds,
            *repository_age_seconds,
            *rpo_hours,
        ),
        Signal::WalArchiveFailing {
            failed_count,
            cause,
            forecast,
            ..
        } => format!("WAL archiving is failing ({failed_count} failed attempts): {cause}; {forecast}"),
        Signal::ClusterArchivingFailing {
            cluster,
            reason,
            message,
        } => format!(
            "CloudNativePG Cluster {cluster}: WAL archiving is failing (ContinuousArchiving False, {reason}): {message}"
        ),
        Signal::ClusterBackupFailed {
            cluster,
            backup,
            error,
        } => format!("the newest Backup {backup} of CloudNativePG Cluster {cluster} failed: {error}"),
        Signal::ScheduledBackupSuspended { scheduled_backup } => format!(
            "ScheduledBackup {scheduled_backup} is suspended: it takes no backup until it is resumed"
        ),
        Signal::ClusterBackupStale {
            cluster,
            age_seconds: Some(age),
            rpo_hours,
        } => format!(
            "the newest completed backup of CloudNativePG Cluster {cluster} is {} old (RPO {rpo_hours} h)",
            crate::domain::duration::human(*age)
        ),
        Signal::ClusterBackupStale { cluster, .. } => {
            format!("CloudNativePG Cluster {cluster} has no completed backup")
        }
    }
}
