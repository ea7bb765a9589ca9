//! The `s3` probe: asks S3, with the backup job's own credentials (from its Secret), what the
//! runbook's scenario 4 asks — does the bucket exist, what is the newest backup under the prefix
//! (its age and size), can the job write (a small probe object, written then deleted), what is
//! the bucket policy, and is replication configured (the runbook's prevention check).
//!
//! Also builds what other parts need to act as the backup job against S3: [`job_s3`] (client,
//! bucket, prefix from the settings and the Secret; the listing is `crate::infra::s3`).

use std::sync::Arc;

use chrono::Utc;
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::secret::SecretUnavailable;
use super::{fingerprint, Probe, ProbeContext, ProbeOutput, ReadOnly, Signal};
use crate::domain::duration::human;
use crate::infra::aws::{self, Failure, FailureKind};
use crate::infra::s3::{list_backups, JobS3, PROBE_OBJECT_MARKER};

/// Why the backup job's S3 client cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobS3Error {
    #[error("the backup Secret is unavailable ({0})")]
    Secret(#[from] SecretUnavailable),
    #[error("no bucket: neither [s3] bucket nor the Secret's s3-bucket is set")]
    NoBucket,
    #[error("the backup Secret lacks aws-access-key-id or aws-secret-access-key")]
    NoCredentials,
}

/// Builds the S3 client of the backup job: the bucket from `[s3] bucket` or the Secret's
/// `s3-bucket`, the credentials from the Secret. `Err` says, in words, why that is not possible.
pub async fn job_s3(ctx: &ProbeContext) -> Result<JobS3, JobS3Error> {
    let settings = &ctx.settings;
    let secret = ctx.backup_secret().await?;
    let (bucket, bucket_source) = if !settings.s3.bucket.is_empty() {
        (settings.s3.bucket.clone(), "settings")
    } else if let Some(b) = &secret.s3_bucket {
        (b.clone(), "secret")
    } else {
        return Err(JobS3Error::NoBucket);
    };
    let (Some(key_id), Some(secret_key)) =
        (&secret.aws_access_key_id, &secret.aws_secret_access_key)
    else {
        return Err(JobS3Error::NoCredentials);
    };
    let client = ctx.s3_client(key_id, secret_key);
    let secrets = [
        &secret.aws_access_key_id,
        &secret.aws_secret_access_key,
        &secret.encryption_key,
        &secret.postgres_password,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    Ok(JobS3::new(
        client,
        bucket,
        settings.s3.prefix.clone(),
        bucket_source,
        json!({ "aws-access-key-id": fingerprint(key_id.expose_secret().as_bytes()) }),
        secrets,
    ))
}

/// A size in bytes, in the largest unit that keeps it readable: "512 B", "12.3 MB".
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Evidence for a failed call (code, words, HTTP status), scrubbed of secret values.
fn failure_json(job: &JobS3, f: &Failure) -> Value {
    json!({ "code": f.code, "error": job.redact(&f.words), "http_status": f.status })
}

/// Checks the backup bucket with the backup job's credentials.
pub struct S3;

impl Probe for S3 {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            match job_s3(&ctx).await {
                Ok(job) => check(&job, ctx.read_only).await,
                Err(why) => ProbeOutput::skipped(format!("S3 not checked: {why}")),
            }
        })
    }
}

/// The outcome of one step, for the summary and the signals.
struct Step {
    operation: &'static str,
    failure: Option<Failure>,
}

async fn check(job: &JobS3, read_only: Option<ReadOnly>) -> ProbeOutput {
    let (client, bucket) = (&job.client, job.bucket.as_str());
    let mut evidence = json!({
        "bucket": bucket,
        "bucket_source": job.bucket_source,
        "prefix": job.prefix,
        "credentials": job.credentials,
    });

    // HeadBucket first: a missing bucket or refused credentials make every other question moot.
    let head = client
        .head_bucket()
        .bucket(bucket)
        .send()
        .await
        .err()
        .map(|e| aws::explain("S3", &e));
    evidence["head_bucket"] = head.as_ref().map_or(json!("ok"), |f| failure_json(job, f));
    match head.as_ref().map(|f| f.kind) {
        Some(FailureKind::NotFound | FailureKind::NoSuchBucket) => {
            return ProbeOutput::problem(
                format!("Bucket {bucket} does not exist: the backup job has nowhere to upload"),
                vec![Signal::BucketMissing {
                    bucket: bucket.to_owned(),
                }],
            )
            .with_evidence(evidence);
        }
        Some(FailureKind::InvalidAccessKeyId | FailureKind::SignatureDoesNotMatch) => {
            let f = head
                .as_ref()
                .map(|f| (f.code.clone(), f.words.clone()))
                .unwrap_or_default();
            return ProbeOutput::problem(
                format!("S3 refuses the backup job's credentials: {}", f.1),
                vec![Signal::S3InvalidCredentials { code: f.0 }],
            )
            .with_evidence(evidence);
        }
        Some(FailureKind::Unreachable) => {
            let words = head
                .as_ref()
                .map(|f| job.redact(&f.words))
                .unwrap_or_default();
            return ProbeOutput::error(words).with_evidence(evidence);
        }
        // A bare 403 says neither "denied" nor "unknown key": the calls below carry error codes.
        _ => {}
    }

    let (listing, write, policy, replication) = tokio::join!(
        list_backups(client, bucket, &job.prefix),
        write_and_delete(job, read_only),
        bucket_policy(job),
        replication(job)
    );

    let mut steps = Vec::new();
    let now = Utc::now();
    let mut newest_words = None;
    match listing {
        Ok(l) => {
            let incomplete = job.incomplete(&l);
            let newest = l.newest().map(|n| {
                let age = n.last_modified.map(|t| (now - t).num_seconds());
                newest_words = Some(match age {
                    Some(age) => format!(
                        "newest backup {} is {} old ({})",
                        n.key,
                        human(age),
                        human_size(n.size)
                    ),
                    None => format!("newest backup {} ({})", n.key, human_size(n.size)),
                });
                json!({
                    "key": n.key,
                    "last_modified": n.last_modified,
                    "age_seconds": age,
                    "size_bytes": n.size,
                })
            });
            match (&incomplete, &newest_words) {
                (None, None) => {
                    newest_words = Some(format!("no backup under {} yet", job.prefix));
                }
                // A cut listing cannot say what the newest backup is, nor that there is none.
                (Some(why), _) => {
                    newest_words = Some(format!(
                        "the newest backup is unknown ({why}); the newest of those read: {}",
                        newest_words.as_deref().unwrap_or("none")
                    ));
                }
                (None, Some(_)) => {}
            }
            evidence["listing"] = json!({
                "objects": l.backups.len(),
                "keys": l.keys,
                "pages": l.pages,
                "total_bytes": l.total_bytes,
                "complete": l.complete(),
                "newest": newest,
            });
            if let Some(why) = incomplete {
                evidence["listing"]["note"] = json!(why);
            }
            steps.push(Step {
                operation: "ListObjectsV2",
                failure: None,
            });
        }
        Err(e) => {
            let f = aws::explain("S3", &e);
            evidence["listing"] = failure_json(job, &f);
            steps.push(Step {
                operation: "ListObjectsV2",
                failure: Some(f),
            });
        }
    }
    evidence["write"] = write.evidence;
    steps.extend(write.steps);
    evidence["bucket_policy"] = policy;
    evidence["replication"] = replication.0;

    let (signals, problems) = signals_of(bucket, &steps);
    let mut notes: Vec<String> = Vec::new();
    if let Some(delete) = steps
        .iter()
        .find(|s| s.operation == "DeleteObject" && s.failure.is_some())
    {
        let words = delete
            .failure
            .as_ref()
            .map(|f| f.words.clone())
            .unwrap_or_default();
        notes.push(format!(
            "the probe object could not be deleted ({words}): remove it by hand"
        ));
    }
    if !replication.1.is_empty() {
        notes.push(replication.1);
    }
    if let Some(why) = read_only {
        notes.push(format!(
            "write not checked ({}: nothing is written)",
            why.words()
        ));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };

    if !signals.is_empty() {
        let summary = format!("Bucket {bucket}: {}{notes}", problems.join("; "));
        return ProbeOutput::problem(job.redact(&summary), signals).with_evidence(evidence);
    }
    let broken: Vec<String> = steps
        .iter()
        .filter(|s| s.operation != "DeleteObject")
        .filter_map(|s| {
            s.failure
                .as_ref()
                .map(|f| format!("{} failed: {}", s.operation, f.words))
        })
        .collect();
    if !broken.is_empty() {
        return ProbeOutput::error(job.redact(&format!("Bucket {bucket}: {}", broken.join("; "))))
            .with_evidence(evidence);
    }
    let newest = newest_words.unwrap_or_default();
    let summary = match read_only {
        Some(_) => format!("Bucket {bucket} answers the backup job; {newest}{notes}"),
        None => format!("Bucket {bucket} is writable by the backup job; {newest}{notes}"),
    };
    ProbeOutput::ok(job.redact(&summary)).with_evidence(evidence)
}

/// The signals and problem sentences of the steps: refused credentials (once), a missing
/// bucket (once), and each denied operation the backup job needs.
fn signals_of(bucket: &str, steps: &[Step]) -> (Vec<Signal>, Vec<String>) {
    let mut signals: Vec<Signal> = Vec::new();
    let mut problems = Vec::new();
    for step in steps {
        let Some(f) = &step.failure else { continue };
        let seen = |want: fn(&Signal) -> bool| signals.iter().any(want);
        match f.kind {
            FailureKind::InvalidAccessKeyId | FailureKind::SignatureDoesNotMatch
                if !seen(|s| matches!(s, Signal::S3InvalidCredentials { .. })) =>
            {
                signals.push(Signal::S3InvalidCredentials {
                    code: f.code.clone(),
                });
                problems.push(format!(
                    "S3 refuses the backup job's credentials ({})",
                    f.words
                ));
            }
            FailureKind::NoSuchBucket if !seen(|s| matches!(s, Signal::BucketMissing { .. })) => {
                signals.push(Signal::BucketMissing {
                    bucket: bucket.to_owned(),
                });
                problems.push("the bucket does not exist".to_owned());
            }
            // The backup job never deletes, so a denied delete of the probe object is a note.
            FailureKind::AccessDenied | FailureKind::Forbidden
                if step.operation != "DeleteObject" =>
            {
                signals.push(Signal::S3AccessDenied {
                    operation: step.operation.to_owned(),
                });
                problems.push(format!(
                    "{} is denied to the backup job's credentials ({})",
                    step.operation, f.words
                ));
            }
            _ => {}
        }
    }
    (signals, problems)
}

struct Write {
    evidence: Value,
    steps: Vec<Step>,
}

/// Writes a small object under the prefix as the backup job would, then deletes it; in a run
/// that must write nothing, says so and writes nothing.
async fn write_and_delete(job: &JobS3, read_only: Option<ReadOnly>) -> Write {
    if let Some(why) = read_only {
        return Write {
            evidence: json!({ "skipped": format!(
                "{}: nothing is written, so whether the backup job may write is not checked",
                why.words()
            ) }),
            steps: Vec::new(),
        };
    }
    let suffix = hex::encode(rand::random::<[u8; 8]>());
    let key = format!("{}{PROBE_OBJECT_MARKER}{suffix}", job.prefix);
    let body = b"Written by backup-remediator to check that the backup job may write here; safe to delete.\n";
    let put = job
        .client
        .put_object()
        .bucket(&job.bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(body))
        .send()
        .await;
    if let Err(e) = put {
        let f = aws::explain("S3", &e);
        return Write {
            evidence: json!({ "key": key, "put": failure_json(job, &f) }),
            steps: vec![Step {
                operation: "PutObject",
                failure: Some(f),
            }],
        };
    }
    let delete = job
        .client
        .delete_object()
        .bucket(&job.bucket)
        .key(&key)
        .send()
        .await;
    let delete = delete.err().map(|e| aws::explain("S3", &e));
    Write {
        evidence: json!({
            "key": key,
            "put": "ok",
            "delete": delete.as_ref().map_or(json!("ok"), |f| failure_json(job, f)),
        }),
        steps: vec![
            Step {
                operation: "PutObject",
                failure: None,
            },
            Step {
                operation: "DeleteObject",
                failure: delete,
            },
        ],
    }
}

/// The bucket policy, as evidence. Its absence is normal (access comes from the IAM policy).
async fn bucket_policy(job: &JobS3) -> Value {
    match job
        .client
        .get_bucket_policy()
        .bucket(&job.bucket)
        .send()
        .await
    {
        Ok(out) => {
            let text = out.policy().unwrap_or_default();
            let document = serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!(text));
            json!({ "present": true, "document": document })
        }
        Err(e) => {
            let f = aws::explain("S3", &e);
            match f.code.as_str() {
                "NoSuchBucketPolicy" => json!({ "present": false, "note": "no bucket policy" }),
                _ => {
                    json!({ "present": null, "note": "not readable with the job's credentials (the job does not need it)", "error": failure_json(job, &f) })
                }
            }
        }
    }
}

/// Replication (the runbook's prevention check), as evidence and a note for the summary.
async fn replication(job: &JobS3) -> (Value, String) {
    match job
        .client
        .get_bucket_replication()
        .bucket(&job.bucket)
        .send()
        .await
    {
        Ok(out) => {
            let rules: Vec<Value> = out
                .replication_configuration()
                .map(|c| c.rules())
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id(),
                        "status": r.status().as_str(),
                        "destination_bucket": r.destination().map(|d| d.bucket()),
                    })
                })
                .collect();
            let enabled = rules.iter().filter(|r| r["status"] == "Enabled").count();
            let note = if enabled == 0 {
                "replication configured but no rule is enabled".to_owned()
            } else {
                String::new()
            };
            (
                json!({ "configured": true, "enabled_rules": enabled, "rules": rules }),
                note,
            )
        }
        Err(e) => {
            let f = aws::explain("S3", &e);
            match f.code.as_str() {
                "ReplicationConfigurationNotFoundError" => (
                    json!({ "configured": false, "note": "replication not configured" }),
                    "replication not configured".to_owned(),
                ),
                _ => (
                    json!({ "configured": null, "note": "not readable with the job's credentials", "error": failure_json(job, &f) }),
                    String::new(),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::s3::is_probe_object;

    #[test]
    fn ages_and_sizes_read_like_a_person_would_say_them() {
        assert_eq!(human(42), "42 s");
        assert_eq!(human(12 * 60 + 5), "12 min");
        assert_eq!(human(3 * 3600 + 59), "3 h");
        assert_eq!(human(5 * 86_400), "5 d");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(12_345_678), "12.3 MB");
    }

    #[test]
    fn probe_objects_are_never_taken_for_backups() {
        assert!(is_probe_object(
            "postgres-backups/backup-remediator-probe-0011223344556677"
        ));
        assert!(!is_probe_object(
            "postgres-backups/postgres-backup-20240101_link_users.sql.enc"
        ));
    }

    #[test]
    fn refused_credentials_count_once_and_a_denied_delete_is_not_a_problem() {
        let f = |kind, code: &str| {
            Some(Failure {
                kind,
                code: code.into(),
                words: "w".into(),
                status: Some(403),
            })
        };
        let steps = [
            Step {
                operation: "ListObjectsV2",
                failure: f(FailureKind::InvalidAccessKeyId, "InvalidAccessKeyId"),
            },
            Step {
                operation: "PutObject",
                failure: f(FailureKind::InvalidAccessKeyId, "InvalidAccessKeyId"),
            },
            Step {
                operation: "DeleteObject",
                failure: f(FailureKind::AccessDenied, "AccessDenied"),
            },
        ];
        let (signals, problems) = signals_of("b", &steps);
        assert_eq!(
            signals,
            vec![Signal::S3InvalidCredentials {
                code: "InvalidAccessKeyId".into()
            }]
        );
        assert_eq!(problems.len(), 1);
    }
}
