use super::*;
use crate::domain::finding::{ConnectFailure, LogPattern};
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

#[test]
fn pg_dumps_version_mismatch_line_outranks_the_generic_scenarios_and_names_the_image() {
    let mismatch = || {
        finding(
            "backup_job",
            Status::Problem,
            vec![log(
                LogPattern::ServerVersionMismatch,
                "pg_dump: error: aborting because of server version mismatch",
            )],
        )
    };
    // The log line alone beats a problem another probe found directly.
    let d = diagnose(&[
        mismatch(),
        finding(
            "disk",
            Status::Problem,
            vec![Signal::VolumeOverThreshold {
                pvc: "p".into(),
                percent: 85.0,
                threshold: 80.0,
            }],
        ),
    ]);
    assert_eq!(d.scenario, Scenario::VersionMismatch, "{}", d.summary);
    assert_eq!(d.confidence, 0.9);
    assert_eq!(d.also, [Scenario::Storage]);
    // With the image's version known, the change to make is in the summary.
    let d = diagnose(&[
        mismatch(),
        finding(
            "versions",
            Status::Problem,
            vec![Signal::ClientOlderThanServer {
                image: "postgres:14-alpine".into(),
                client_major: 14,
                server_major: 15,
                suggested_image: "postgres:15-alpine".into(),
            }],
        ),
    ]);
    assert_eq!(d.scenario, Scenario::VersionMismatch);
    assert_eq!(d.confidence, 0.95);
    assert!(
        d.summary
            .starts_with("Scenario: client/server version mismatch: ")
            && d.summary
                .contains("set the CronJob's image to postgres:15-alpine"),
        "{}",
        d.summary
    );
}

#[test]
fn a_suspended_or_missing_cronjob_is_the_backup_schedule_scenario() {
    for signal in [
        Signal::CronJobSuspended {
            cronjob: "postgres-backup".into(),
        },
        Signal::CronJobMissing {
            cronjob: "postgres-backup".into(),
        },
    ] {
        let d = diagnose(&[
            stale(),
            finding(
                "backup_job",
                Status::Problem,
                vec![Signal::NoBackupJob, signal],
            ),
            ok("database"),
        ]);
        assert_eq!(d.scenario, Scenario::BackupSchedule, "{}", d.summary);
        assert!(
            d.summary.contains("CronJob postgres-backup"),
            "{}",
            d.summary
        );
    }
}
