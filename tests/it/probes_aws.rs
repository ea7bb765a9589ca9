//! The probes that talk to AWS (s3, iam, encryption), against moto's real server: a bucket with
//! backups, a missing bucket, a write denied by a real IAM policy (moto enforcing IAM), refused
//! credentials, and backups made by the real `pg_dump -Fc` and `openssl enc` as the runbook's job
//! makes them. No traffic leaves 127.0.0.1: endpoints, region and credentials are all explicit.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use backup_remediator::config::Settings;
use backup_remediator::domain::finding::{ProbeOutput, Signal, Status};
use backup_remediator::probes::encryption::Encryption;
use backup_remediator::probes::iam;
use backup_remediator::probes::s3::S3;
use backup_remediator::probes::{self, BackupSecret, Probe, ProbeContext};
use k8s_openapi::ByteString;
use serde_json::json;

use crate::support::backup::openssl_encrypt;
use crate::support::moto;
use moto::{Moto, ENFORCED_PREFIX, PREFIX};

const BUCKET: &str = "link-backups";
const KEY: &str = "current-encryption-key-0123456789abcdef";
const OTHER_KEY: &str = "previous-encryption-key-fedcba9876543210";

/// The backup Secret as the job sees it.
fn secret(credentials: &Credentials, encryption_key: &str) -> BackupSecret {
    let pairs = [
        ("postgres-user", "backup_user"),
        ("postgres-password", "not-used-here"),
        ("s3-bucket", BUCKET),
        ("encryption-key", encryption_key),
        ("aws-access-key-id", credentials.access_key_id()),
        ("aws-secret-access-key", credentials.secret_access_key()),
    ];
    let data: BTreeMap<String, ByteString> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    BackupSecret::from_data(&data)
}

fn ctx(settings: Settings, secret: BackupSecret) -> Arc<ProbeContext> {
    Arc::new(
        ProbeContext::new(Arc::new(settings), None, reqwest::Client::new()).with_secret(Ok(secret)),
    )
}

async fn run(probe: &dyn Probe, ctx: Arc<ProbeContext>) -> ProbeOutput {
    tokio::time::timeout(Duration::from_secs(30), probe.run(ctx))
        .await
        .expect("the probe answers")
}

/// A real pg_dump custom-format archive of the local `postgres` database.
fn pg_dump(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("postgres.dump");
    let status = Command::new("pg_dump")
        .args(["-Fc", "-h", "127.0.0.1", "-U", "postgres", "-f"])
        .arg(&out)
        .arg("postgres")
        .status()
        .expect("pg_dump is installed (scripts/test.sh installs PostgreSQL)");
    assert!(
        status.success(),
        "pg_dump -Fc of the local postgres database failed"
    );
    out
}

// ---------- s3 ----------

#[tokio::test]
async fn a_healthy_bucket_with_backups_is_ok_and_names_the_newest_one() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put(
        BUCKET,
        &format!("{PREFIX}postgres-backup-20240101_020000_link_users.sql.enc"),
        vec![1; 10],
    )
    .await;
    let newest = format!("{PREFIX}postgres-backup-20240102_020000_link_users.sql.enc");
    moto.put(BUCKET, &newest, vec![2; 2048]).await;

    let out = run(
        &S3,
        ctx(moto.settings(""), secret(&moto::admin_credentials(), KEY)),
    )
    .await;

    assert_eq!(out.status, Status::Ok, "{} {}", out.summary, out.evidence);
    assert!(out.signals.is_empty());
    assert_eq!(out.evidence["listing"]["newest"]["key"], newest.as_str());
    assert_eq!(out.evidence["listing"]["newest"]["size_bytes"], 2048);
    assert_eq!(
        out.evidence["listing"]["objects"], 2,
        "the probe's own object is not a backup"
    );
    assert_eq!(out.evidence["write"]["put"], "ok");
    assert_eq!(out.evidence["write"]["delete"], "ok");
    assert_eq!(out.evidence["bucket_policy"]["present"], false);
    assert_eq!(out.evidence["replication"]["configured"], false);
    assert_eq!(out.evidence["bucket_source"], "secret");
    assert!(
        out.summary.contains(&newest) && out.summary.contains("replication not configured"),
        "{}",
        out.summary
    );
    let left = moto
        .s3(moto::admin_credentials())
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(2), "the probe object was deleted");
}

#[tokio::test]
async fn a_missing_bucket_is_reported_as_bucket_missing() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;

    let out = run(
        &S3,
        ctx(moto.settings(""), secret(&moto::admin_credentials(), KEY)),
    )
    .await;

    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![Signal::BucketMissing {
            bucket: BUCKET.into()
        }]
    );
    assert!(out.summary.contains("does not exist"), "{}", out.summary);
}

/// The backup user of the denied-write scenario: reads allowed, writes explicitly denied.
fn read_only_policy() -> serde_json::Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListBackups", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{BUCKET}")},
            {"Sid": "ReadBackups", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": format!("arn:aws:s3:::{BUCKET}/*")},
            {"Sid": "NoWrites", "Effect": "Deny", "Action": "s3:PutObject", "Resource": format!("arn:aws:s3:::{BUCKET}/*")}
        ]
    })
}

#[tokio::test]
async fn a_write_denied_by_iam_is_seen_by_the_s3_probe_and_explained_by_the_iam_probe() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put(
        BUCKET,
        &format!("{PREFIX}postgres-backup-20240101.sql.enc"),
        vec![1; 10],
    )
    .await;
    let job = moto
        .user_with_policy(
            "postgres-backup-user",
            "postgres-backup-policy",
            &read_only_policy(),
        )
        .await;
    let auditor = moto
        .user_with_policy(
            "backup-remediator",
            "read-iam",
            &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}),
        )
        .await;
    moto.enforce_iam().await;
    let settings = moto.settings_with_prefix(ENFORCED_PREFIX, "");

    let s3 = run(&S3, ctx(settings.clone(), secret(&job, KEY))).await;
    let iam_client = moto.iam(auditor).await;
    let iam = iam::check(
        &iam_client,
        &settings.iam.user,
        &settings.iam.policy,
        BUCKET,
        ENFORCED_PREFIX,
    )
    .await;

    assert_eq!(s3.status, Status::Problem, "{} {}", s3.summary, s3.evidence);
    assert_eq!(
        s3.signals,
        vec![Signal::S3AccessDenied {
            operation: "PutObject".into()
        }],
        "{}",
        s3.evidence
    );
    assert!(s3.summary.contains("PutObject is denied"), "{}", s3.summary);
    assert_eq!(s3.evidence["listing"]["objects"], 1, "listing is allowed");
    assert_eq!(
        iam.status,
        Status::Problem,
        "{} {}",
        iam.summary,
        iam.evidence
    );
    assert_eq!(
        iam.signals,
        vec![Signal::IamActionDenied {
            action: "s3:PutObject".into(),
            resource: format!("arn:aws:s3:::{BUCKET}/{ENFORCED_PREFIX}*")
        }]
    );
    assert_eq!(
        iam.evidence["method"], "document",
        "moto's simulator answers 500: {}",
        iam.evidence
    );
    assert_eq!(
        iam.evidence["decisions"][0]["statement"],
        "statement 3 (Sid NoWrites)"
    );
    assert_eq!(iam.evidence["decisions"][0]["decision"], "explicit_deny");
    assert!(iam.summary.contains("NoWrites"), "{}", iam.summary);
}

#[tokio::test]
async fn a_missing_iam_user_means_every_action_is_denied() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;
    let client = moto.iam(moto::admin_credentials()).await;

    let out = iam::check(
        &client,
        "postgres-backup-user",
        "postgres-backup-policy",
        BUCKET,
        PREFIX,
    )
    .await;

    assert_eq!(out.status, Status::Problem, "{}", out.summary);
    assert_eq!(out.signals.len(), 3);
    assert!(
        out.summary
            .contains("user postgres-backup-user does not exist"),
        "{}",
        out.summary
    );
}

#[tokio::test]
async fn a_policy_that_allows_the_job_is_ok() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": format!("arn:aws:s3:::{BUCKET}/{PREFIX}*")},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{BUCKET}")}
    ]});
    moto.user_with_policy("postgres-backup-user", "postgres-backup-policy", &policy)
        .await;
    let client = moto.iam(moto::admin_credentials()).await;

    let out = iam::check(
        &client,
        "postgres-backup-user",
        "postgres-backup-policy",
        BUCKET,
        PREFIX,
    )
    .await;

    assert_eq!(out.status, Status::Ok, "{} {}", out.summary, out.evidence);
    assert!(
        out.summary
            .contains("allows s3:PutObject, s3:GetObject, s3:ListBucket"),
        "{}",
        out.summary
    );
}

#[tokio::test]
async fn unknown_or_wrong_credentials_are_reported_as_invalid_credentials() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let job = moto
        .user_with_policy(
            "postgres-backup-user",
            "p",
            &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}),
        )
        .await;
    moto.enforce_iam().await;
    let unknown = Credentials::new("AKIAUNKNOWNKEY000000", "whatever-secret", None, None, "t");
    let wrong_secret = Credentials::new(
        job.access_key_id(),
        "not-the-secret-access-key",
        None,
        None,
        "t",
    );

    let unknown_out = run(
        &S3,
        ctx(
            moto.settings_with_prefix(ENFORCED_PREFIX, ""),
            secret(&unknown, KEY),
        ),
    )
    .await;
    let wrong_out = run(
        &S3,
        ctx(
            moto.settings_with_prefix(ENFORCED_PREFIX, ""),
            secret(&wrong_secret, KEY),
        ),
    )
    .await;
    let right_out = run(
        &S3,
        ctx(
            moto.settings_with_prefix(ENFORCED_PREFIX, ""),
            secret(&job, KEY),
        ),
    )
    .await;

    assert_eq!(
        unknown_out.signals,
        vec![Signal::S3InvalidCredentials {
            code: "InvalidAccessKeyId".into()
        }],
        "{}",
        unknown_out.evidence
    );
    assert!(
        unknown_out.summary.contains("the access key id is unknown"),
        "{}",
        unknown_out.summary
    );
    assert_eq!(
        wrong_out.signals,
        vec![Signal::S3InvalidCredentials {
            code: "SignatureDoesNotMatch".into()
        }],
        "{}",
        wrong_out.evidence
    );
    assert!(
        wrong_out.summary.contains("the secret access key is wrong"),
        "{}",
        wrong_out.summary
    );
    assert_eq!(
        right_out.status,
        Status::Ok,
        "enforcement accepts the SDK's signature: {} {}",
        right_out.summary,
        right_out.evidence
    );
}

#[tokio::test]
async fn an_unreachable_s3_endpoint_is_an_error_and_the_key_is_still_checked() {
    backup_remediator::install_crypto_provider();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = Settings::from_toml(&format!(
        "[s3]\nendpoint = \"http://127.0.0.1:{port}\"\nforce_path_style = true\n[probes]\ndeadline_ms = 4000"
    ))
    .unwrap();
    let c = ctx(settings, secret(&moto::admin_credentials(), "short"));

    let s3 = run(&S3, c.clone()).await;
    let enc = run(&Encryption, c).await;

    assert_eq!(s3.status, Status::Error);
    assert!(
        s3.summary.starts_with("S3 endpoint unreachable"),
        "{}",
        s3.summary
    );
    assert_eq!(
        enc.status,
        Status::Problem,
        "the short key is still reported: {}",
        enc.summary
    );
    assert_eq!(
        enc.signals,
        vec![Signal::KeyTooShort {
            length: 5,
            minimum: 32
        }]
    );
    assert!(
        enc.evidence["newest_backup"]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{}",
        enc.evidence
    );
}

// ---------- encryption ----------

#[tokio::test]
async fn the_newest_backup_made_with_another_key_is_a_key_mismatch() {
    backup_remediator::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let dump = pg_dump(dir.path());
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put(
        BUCKET,
        &format!("{PREFIX}postgres-backup-20240101_postgres.sql.enc"),
        openssl_encrypt(&dump, KEY),
    )
    .await;
    let newest = format!("{PREFIX}postgres-backup-20240102_postgres.sql.enc");
    moto.put(BUCKET, &newest, openssl_encrypt(&dump, OTHER_KEY))
        .await;

    let out = run(
        &Encryption,
        ctx(moto.settings(""), secret(&moto::admin_credentials(), KEY)),
    )
    .await;

    assert_eq!(
        out.status,
        Status::Problem,
        "{} {}",
        out.summary,
        out.evidence
    );
    assert_eq!(
        out.signals,
        vec![Signal::KeyMismatch {
            object: newest.clone()
        }]
    );
    assert!(
        out.summary
            .contains("was not made with the current key (or is not a pg_dump custom archive)"),
        "{}",
        out.summary
    );
    assert_eq!(out.evidence["key"]["length"], KEY.len());
    assert_eq!(
        out.evidence["key"]["fingerprint"],
        probes::fingerprint(KEY.as_bytes())
    );
}

#[tokio::test]
async fn the_newest_backup_made_with_the_current_key_is_ok() {
    backup_remediator::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let dump = pg_dump(dir.path());
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put(
        BUCKET,
        &format!("{PREFIX}postgres-backup-20240101_postgres.sql.enc"),
        openssl_encrypt(&dump, OTHER_KEY),
    )
    .await;
    let newest = format!("{PREFIX}postgres-backup-20240102_postgres.sql.enc");
    moto.put(BUCKET, &newest, openssl_encrypt(&dump, KEY)).await;

    let out = run(
        &Encryption,
        ctx(moto.settings(""), secret(&moto::admin_credentials(), KEY)),
    )
    .await;

    assert_eq!(out.status, Status::Ok, "{} {}", out.summary, out.evidence);
    assert!(out.signals.is_empty());
    assert_eq!(out.evidence["newest_backup"]["object"], newest.as_str());
    assert_eq!(out.evidence["newest_backup"]["decrypts_to_pg_dump"], true);
    assert_eq!(out.evidence["round_trip"], "ok");
}

#[tokio::test]
async fn a_short_key_is_too_short_and_no_backup_yet_is_not_a_problem() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;

    let out = run(
        &Encryption,
        ctx(
            moto.settings(""),
            secret(&moto::admin_credentials(), "short-key"),
        ),
    )
    .await;

    assert_eq!(out.status, Status::Problem);
    assert_eq!(
        out.signals,
        vec![Signal::KeyTooShort {
            length: 9,
            minimum: 32
        }]
    );
    assert_eq!(
        out.evidence["newest_backup"]["object"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_missing_key_is_key_missing() {
    backup_remediator::install_crypto_provider();
    let moto = Moto::start().await;

    let out = run(
        &Encryption,
        ctx(moto.settings(""), secret(&moto::admin_credentials(), "")),
    )
    .await;

    assert_eq!(out.status, Status::Problem);
    assert_eq!(out.signals, vec![Signal::KeyMissing]);
}

// ---------- secrets ----------

#[tokio::test]
async fn no_secret_value_appears_in_any_finding() {
    backup_remediator::install_crypto_provider();
    let (password, aws_secret, key) = (
        "canary-pw-5d1e",
        "canary-aws-secret-77b0",
        "canary-encryption-key-0000000000a9c3",
    );
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    moto.put(
        BUCKET,
        &format!("{PREFIX}postgres-backup-20240101.sql.enc"),
        b"Salted__12345678 not really a dump...".to_vec(),
    )
    .await;
    let with = |key_id: &str| {
        let pairs = [
            ("postgres-user", "backup_user"),
            ("postgres-password", password),
            ("s3-bucket", BUCKET),
            ("encryption-key", key),
            ("aws-access-key-id", key_id),
            ("aws-secret-access-key", aws_secret),
        ];
        BackupSecret::from_data(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        )
    };
    let probes: Vec<Arc<dyn Probe>> = vec![Arc::new(S3), Arc::new(Encryption)];

    // Accepted credentials (moto not enforcing), then refused ones (enforcing).
    let accepted = probes::run_all(
        &probes,
        ctx(
            moto.settings_with_prefix(ENFORCED_PREFIX, ""),
            with("AKIACANARYID00000001"),
        ),
        Duration::from_secs(20),
    )
    .await;
    moto.enforce_iam().await;
    let refused = probes::run_all(
        &probes,
        ctx(
            moto.settings_with_prefix(ENFORCED_PREFIX, ""),
            with("AKIACANARYID00000001"),
        ),
        Duration::from_secs(20),
    )
    .await;

    let shown = serde_json::to_string(&[accepted.clone(), refused.clone()]).unwrap();
    for canary in [password, aws_secret, key, "canary", "AKIACANARYID00000001"] {
        assert!(
            !shown.contains(canary),
            "a secret leaked into a finding: {shown}"
        );
    }
    assert_eq!(
        refused[0].signals,
        vec![Signal::S3InvalidCredentials {
            code: "InvalidAccessKeyId".into()
        }],
        "{shown}"
    );
    assert_eq!(accepted[0].status, Status::Ok, "{shown}");
}
