//! Diagnosis: from the probes' findings to the runbook scenario that explains the failure, with
//! the evidence that decided it and a confidence. Pure: data in, data out.
//!
//! How it decides. Each signal supports at most one scenario, either *directly* (a probe
//! established the fact: the role is missing, the bucket is gone) or *by the job's logs* (a line
//! matched a runbook error pattern). A scenario confirmed both ways wins; then the one with the
//! most support; ties go to the step the backup job reaches first (connect → authenticate → dump
//! to disk → encrypt → upload), because the earliest broken step is the one that failed this run.
//! Two log patterns are ambiguous in the runbook and are settled by the other probes:
//! - "permission denied" may be the database (scenario 2), the filesystem (3) or S3 (4): it
//!   supports whichever of those a probe found directly, and scenario 2 (where the runbook lists
//!   it) only when none did.
//! - "timeout" may be the database (1) or the network to S3 (4): S3 when the S3 probe found an
//!   access problem, the database otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::probes::{ConnectFailure, Finding, LogPattern, Signal, Status};

/// The runbook's resolution scenarios.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// 1: connection refused / timeout / host unreachable.
    DatabaseConnection,
    /// 2: authentication failed / role does not exist / permission denied.
    Authentication,
    /// 3: no space left on device / disk full.
    Storage,
    /// 5: encryption failed / invalid key / openssl error.
    Encryption,
    /// 4: access denied / bucket does not exist / invalid credentials.
    S3Access,
    /// Every probe healthy, or nothing explains the failure.
    TransientUnknown,
}

impl Scenario {
    /// The runbook's number for the scenario (none for transient/unknown).
    pub fn number(self) -> Option<u8> {
        match self {
            Scenario::DatabaseConnection => Some(1),
            Scenario::Authentication => Some(2),
            Scenario::Storage => Some(3),
            Scenario::S3Access => Some(4),
            Scenario::Encryption => Some(5),
            Scenario::TransientUnknown => None,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::DatabaseConnection => "database connection",
            Scenario::Authentication => "authentication",
            Scenario::Storage => "storage",
            Scenario::S3Access => "S3 access",
            Scenario::Encryption => "encryption",
            Scenario::TransientUnknown => "transient or unknown",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::DatabaseConnection => "database_connection",
            Scenario::Authentication => "authentication",
            Scenario::Storage => "storage",
            Scenario::S3Access => "s3_access",
            Scenario::Encryption => "encryption",
            Scenario::TransientUnknown => "transient_unknown",
        }
    }
}

/// One piece of evidence behind a diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Evidence {
    pub probe: String,
    /// `direct` (a probe established it) or `log` (a backup log line matched).
    pub kind: String,
    pub text: String,
}

/// The scenario that explains the failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Diagnosis {
    pub scenario: Scenario,
    /// 0 to 1.
    pub confidence: f64,
    /// One paragraph for the person on call.
    pub summary: String,
    /// What decided it, strongest first.
    pub evidence: Vec<Evidence>,
    /// Other problems found that did not decide this run's failure.
    pub also: Vec<Scenario>,
    /// Backup health facts that explain no scenario but matter (RPO, job state).
    pub context: Vec<String>,
}

#[derive(Default)]
struct Support {
    direct: f64,
    log: f64,
    evidence: Vec<(f64, Evidence)>,
}

/// Where a signal points, and how strongly (1.0 = established by a probe).
fn direct_support(signal: &Signal) -> Option<(Scenario, f64)> {
    use Scenario::*;
    Some(match signal {
        Signal::DatabaseUnreachable { .. } => (DatabaseConnection, 1.0),
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
        Signal::BackupNeverReported
        | Signal::LastSuccessStale { .. }
        | Signal::BackupErrors { .. }
        | Signal::NoBackupJob
        | Signal::JobFailed { .. }
        | Signal::PodFailed { .. }
        | Signal::LogMatch { .. } => return None,
    })
}

const LOG_WEIGHT: f64 = 0.6;
const AMBIGUOUS_LOG_WEIGHT: f64 = 0.4;

/// Where a log pattern points, given what the probes found directly.
fn log_support(pattern: LogPattern, direct: &BTreeMap<Scenario, Support>) -> (Scenario, f64) {
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
    }
}

/// A sentence for a signal; never contains a secret (signals hold none).
pub fn describe(signal: &Signal) -> String {
    match signal {
        Signal::BackupNeverReported => "the backup job never reported a successful backup".into(),
        Signal::LastSuccessStale { age_seconds } => {
            format!(
                "last successful backup {} ago",
                crate::probes::backup_metrics::human_age(*age_seconds)
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
                ConnectFailure::Other => "unreachable",
            };
            format!("the primary {what}: {detail}")
        }
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
    }
}

/// Names the scenario that explains the findings.
pub fn diagnose(findings: &[Finding]) -> Diagnosis {
    let mut support: BTreeMap<Scenario, Support> = BTreeMap::new();
    let mut context = Vec::new();
    // Direct evidence first: log patterns are read in its light.
    for f in findings {
        for s in &f.signals {
            match direct_support(s) {
                Some((scenario, w)) => {
                    let e = support.entry(scenario).or_default();
                    e.direct = e.direct.max(w);
                    e.evidence.push((
                        w,
                        Evidence {
                            probe: f.probe.clone(),
                            kind: "direct".into(),
                            text: describe(s),
                        },
                    ));
                }
                None if !matches!(s, Signal::LogMatch { .. }) => context.push(describe(s)),
                None => {}
            }
        }
    }
    let direct_only: BTreeMap<Scenario, Support> = support
        .iter()
        .map(|(k, v)| {
            (
                *k,
                Support {
                    direct: v.direct,
                    log: 0.0,
                    evidence: Vec::new(),
                },
            )
        })
        .collect();
    for f in findings {
        for s in &f.signals {
            if let Signal::LogMatch { pattern, .. } = s {
                let (scenario, w) = log_support(*pattern, &direct_only);
                let e = support.entry(scenario).or_default();
                e.log = e.log.max(w);
                e.evidence.push((
                    w,
                    Evidence {
                        probe: f.probe.clone(),
                        kind: "log".into(),
                        text: describe(s),
                    },
                ));
            }
        }
    }

    let ranked = {
        let mut v: Vec<(Scenario, &Support)> = support.iter().map(|(k, v)| (*k, v)).collect();
        // Confirmed both ways first, then total support, then the earliest step of the job
        // (the enum's order), which `sort_by` keeps for equal keys.
        v.sort_by(|a, b| {
            let confirmed = |s: &Support| s.direct > 0.0 && s.log > 0.0;
            confirmed(b.1)
                .cmp(&confirmed(a.1))
                .then((b.1.direct + b.1.log).total_cmp(&(a.1.direct + a.1.log)))
                .then(a.0.cmp(&b.0))
        });
        v
    };

    let Some(&(scenario, top)) = ranked.first() else {
        return transient(findings, context);
    };
    let competitors = ranked
        .iter()
        .skip(1)
        .filter(|(_, s)| s.direct > 0.0)
        .count();
    let confidence = if top.direct > 0.0 && top.log > 0.0 {
        0.95
    } else if top.direct > 0.0 {
        (0.85 * top.direct - 0.1 * competitors as f64).max(0.5)
    } else {
        top.log
    };
    let mut evidence: Vec<(f64, Evidence)> = top.evidence.clone();
    evidence.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut evidence: Vec<Evidence> = evidence.into_iter().map(|(_, e)| e).collect();
    evidence.dedup();
    let also: Vec<Scenario> = ranked
        .iter()
        .skip(1)
        .filter(|(_, s)| s.direct > 0.0)
        .map(|(k, _)| *k)
        .collect();
    let mut summary = format!(
        "Scenario {} ({}): {}",
        scenario.number().map(|n| n.to_string()).unwrap_or_default(),
        scenario.title(),
        evidence
            .iter()
            .take(3)
            .map(|e| e.text.clone())
            .collect::<Vec<_>>()
            .join("; ")
    );
    if !also.is_empty() {
        summary.push_str(&format!(
            ". Also found: {}",
            also.iter()
                .map(|s| s.title())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Diagnosis {
        scenario,
        confidence: round2(confidence),
        summary,
        evidence,
        also,
        context,
    }
}

fn transient(findings: &[Finding], context: Vec<String>) -> Diagnosis {
    let unanswered: Vec<&Finding> = findings
        .iter()
        .filter(|f| matches!(f.status, Status::Error | Status::Skipped))
        .collect();
    let (confidence, summary) = if unanswered.is_empty() {
        (0.7, "No probe found a problem: the failure looks transient; re-running the backup is the next step".to_owned())
    } else {
        let names: Vec<&str> = unanswered.iter().map(|f| f.probe.as_str()).collect();
        (
            (0.7 - 0.1 * names.len() as f64).max(0.2),
            format!(
                "No probe found a cause, but {} could not answer ({}): the cause may be there",
                names.len(),
                names.join(", ")
            ),
        )
    };
    let evidence = unanswered
        .iter()
        .map(|f| Evidence {
            probe: f.probe.clone(),
            kind: f.status.as_str().into(),
            text: f.summary.clone(),
        })
        .collect();
    Diagnosis {
        scenario: Scenario::TransientUnknown,
        confidence: round2(confidence),
        summary,
        evidence,
        also: Vec::new(),
        context,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn finding(probe: &str, status: Status, signals: Vec<Signal>) -> Finding {
        Finding {
            probe: probe.into(),
            status,
            summary: format!("{probe} summary"),
            evidence: serde_json::json!({}),
            signals,
            started_at: Utc::now(),
            duration_ms: 1,
        }
    }

    fn log(p: LogPattern, line: &str) -> Signal {
        Signal::LogMatch {
            pattern: p,
            line: line.into(),
        }
    }

    fn ok(probe: &str) -> Finding {
        finding(probe, Status::Ok, vec![])
    }

    fn stale() -> Finding {
        finding(
            "backup_metrics",
            Status::Problem,
            vec![Signal::LastSuccessStale {
                age_seconds: 30 * 3600,
            }],
        )
    }

    #[test]
    fn each_runbook_scenario_is_named_from_its_typical_evidence() {
        use LogPattern as P;
        let cases: Vec<(Vec<Finding>, Scenario)> = vec![
            (
                vec![
                    stale(),
                    finding(
                        "backup_job",
                        Status::Problem,
                        vec![log(P::ConnectionRefused, "Connection refused")],
                    ),
                    finding(
                        "database",
                        Status::Problem,
                        vec![Signal::DatabaseUnreachable {
                            failure: ConnectFailure::Refused,
                            detail: "x".into(),
                        }],
                    ),
                ],
                Scenario::DatabaseConnection,
            ),
            (
                vec![
                    finding(
                        "backup_job",
                        Status::Problem,
                        vec![log(P::RoleDoesNotExist, "role \"b\" does not exist")],
                    ),
                    finding(
                        "database",
                        Status::Problem,
                        vec![Signal::RoleMissing { role: "b".into() }],
                    ),
                ],
                Scenario::Authentication,
            ),
            (
                vec![
                    finding(
                        "backup_job",
                        Status::Problem,
                        vec![log(P::NoSpaceLeft, "No space left on device")],
                    ),
                    finding(
                        "disk",
                        Status::Problem,
                        vec![Signal::VolumeOverThreshold {
                            pvc: "p".into(),
                            percent: 93.0,
                            threshold: 80.0,
                        }],
                    ),
                ],
                Scenario::Storage,
            ),
            (
                vec![
                    finding(
                        "backup_job",
                        Status::Problem,
                        vec![log(P::AwsAccessDenied, "(AccessDenied) PutObject")],
                    ),
                    finding(
                        "s3",
                        Status::Problem,
                        vec![Signal::S3AccessDenied {
                            operation: "PutObject".into(),
                        }],
                    ),
                    finding(
                        "iam",
                        Status::Problem,
                        vec![Signal::IamActionDenied {
                            action: "s3:PutObject".into(),
                            resource: "arn".into(),
                        }],
                    ),
                ],
                Scenario::S3Access,
            ),
            (
                vec![
                    finding(
                        "backup_job",
                        Status::Problem,
                        vec![log(P::OpensslError, "bad decrypt")],
                    ),
                    finding(
                        "encryption",
                        Status::Problem,
                        vec![Signal::KeyTooShort {
                            length: 8,
                            minimum: 32,
                        }],
                    ),
                ],
                Scenario::Encryption,
            ),
        ];
        for (findings, want) in cases {
            let d = diagnose(&findings);
            assert_eq!(d.scenario, want, "{}", d.summary);
            assert_eq!(d.confidence, 0.95, "log and probe agree: {}", d.summary);
            assert!(
                d.evidence.iter().any(|e| e.kind == "direct")
                    && d.evidence.iter().any(|e| e.kind == "log")
            );
        }
    }

    #[test]
    fn every_probe_healthy_is_transient_with_the_rpo_as_context() {
        let findings = vec![
            stale(),
            ok("database"),
            ok("s3"),
            ok("disk"),
            ok("encryption"),
        ];
        let d = diagnose(&findings);
        assert_eq!(d.scenario, Scenario::TransientUnknown);
        assert_eq!(d.confidence, 0.7);
        assert!(d.summary.contains("transient"));
        assert_eq!(d.context, ["last successful backup 30 h 0 min ago"]);
    }

    #[test]
    fn probes_that_could_not_answer_make_unknown_with_low_confidence() {
        let findings = vec![
            ok("database"),
            finding("s3", Status::Error, vec![]),
            finding("backup_job", Status::Error, vec![]),
            finding("iam", Status::Skipped, vec![]),
        ];
        let d = diagnose(&findings);
        assert_eq!(d.scenario, Scenario::TransientUnknown);
        assert!((d.confidence - 0.4).abs() < 1e-9, "{}", d.confidence);
        assert!(d.summary.contains("3 could not answer"), "{}", d.summary);
    }

    #[test]
    fn permission_denied_in_the_logs_follows_the_probe_that_found_the_cause() {
        let pd = || {
            finding(
                "backup_job",
                Status::Problem,
                vec![log(LogPattern::PermissionDenied, "permission denied")],
            )
        };
        // The database probe found no read access: the database's permission denied (2).
        let d = diagnose(&[
            pd(),
            finding(
                "database",
                Status::Problem,
                vec![Signal::NoReadAccess {
                    database: "link_users".into(),
                    tables: vec!["public.users".into()],
                }],
            ),
        ]);
        assert_eq!(d.scenario, Scenario::Authentication);
        // The disk probe found the volume full and the database is fine: the filesystem's (3).
        let d = diagnose(&[
            pd(),
            ok("database"),
            finding(
                "disk",
                Status::Problem,
                vec![Signal::EphemeralStorageExhausted { pod: "p".into() }],
            ),
        ]);
        assert_eq!(d.scenario, Scenario::Storage);
        assert_eq!(d.confidence, 0.95, "the log line confirms the disk probe");
        // Nothing else found: the runbook's reading (2), with low confidence.
        let d = diagnose(&[pd(), ok("database"), ok("disk")]);
        assert_eq!(d.scenario, Scenario::Authentication);
        assert_eq!(d.confidence, 0.4);
    }

    #[test]
    fn a_timeout_is_the_network_to_s3_only_when_s3_is_the_problem() {
        let t = || {
            finding(
                "backup_job",
                Status::Problem,
                vec![log(LogPattern::Timeout, "read timeout")],
            )
        };
        assert_eq!(diagnose(&[t()]).scenario, Scenario::DatabaseConnection);
        let d = diagnose(&[
            t(),
            finding(
                "s3",
                Status::Problem,
                vec![Signal::S3AccessDenied {
                    operation: "PutObject".into(),
                }],
            ),
        ]);
        assert_eq!(d.scenario, Scenario::S3Access);
    }

    #[test]
    fn when_two_things_are_broken_the_one_the_logs_show_decides_and_the_other_is_listed() {
        let findings = vec![
            finding(
                "backup_job",
                Status::Problem,
                vec![log(LogPattern::AwsNoSuchBucket, "NoSuchBucket")],
            ),
            finding(
                "disk",
                Status::Problem,
                vec![Signal::VolumeOverThreshold {
                    pvc: "p".into(),
                    percent: 85.0,
                    threshold: 80.0,
                }],
            ),
            finding(
                "s3",
                Status::Problem,
                vec![Signal::BucketMissing {
                    bucket: "link-backups".into(),
                }],
            ),
        ];
        let d = diagnose(&findings);
        assert_eq!(d.scenario, Scenario::S3Access);
        assert_eq!(d.also, [Scenario::Storage]);
        assert!(d.summary.contains("Also found: storage"), "{}", d.summary);
    }

    #[test]
    fn without_logs_the_earliest_broken_step_of_the_job_decides() {
        let findings = vec![
            finding(
                "s3",
                Status::Problem,
                vec![Signal::BucketMissing { bucket: "b".into() }],
            ),
            finding(
                "database",
                Status::Problem,
                vec![Signal::AuthenticationFailed { role: "r".into() }],
            ),
        ];
        let d = diagnose(&findings);
        assert_eq!(
            d.scenario,
            Scenario::Authentication,
            "authentication comes before upload"
        );
        assert_eq!(d.confidence, 0.75, "one competitor lowers the confidence");
    }

    #[test]
    fn missing_secret_keys_point_at_the_scenario_that_uses_them() {
        let k = |key: &str| {
            vec![finding(
                "secret",
                Status::Problem,
                vec![Signal::SecretKeyMissing { key: key.into() }],
            )]
        };
        assert_eq!(
            diagnose(&k("postgres-password")).scenario,
            Scenario::Authentication
        );
        assert_eq!(
            diagnose(&k("aws-secret-access-key")).scenario,
            Scenario::S3Access
        );
        assert_eq!(
            diagnose(&k("encryption-key")).scenario,
            Scenario::Encryption
        );
    }
}
