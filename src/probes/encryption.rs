//! The `encryption` probe (runbook scenario 5): is the backup encryption key present and long
//! enough, does the openssl-compatible encryption work in process (a round trip through
//! [`crate::infra::crypto`]), and was the newest backup made with the current key — its first bytes,
//! read with a ranged GET, must decrypt to the pg_dump custom-format magic `PGDMP`.
//!
//! Evidence carries the key's length and fingerprint, never the key.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::s3;
use super::{fingerprint, Probe, ProbeContext, ProbeOutput, Signal};
use crate::infra::aws;
use crate::infra::crypto;
use crate::infra::s3::{list_backups, JobS3};

/// The first bytes of a pg_dump custom-format archive.
pub const PG_DUMP_MAGIC: &[u8] = b"PGDMP";

/// Bytes read from the start of the newest backup: the 16-byte header and three blocks.
pub const HEAD_BYTES: u64 = 64;

/// Checks the backup encryption key against the settings, the crypto code and the newest backup.
pub struct Encryption;

impl Probe for Encryption {
    fn name(&self) -> &'static str {
        "encryption"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move { check(&ctx).await })
    }
}

/// What the check of the newest backup concluded.
enum Newest {
    /// Decrypts to `PGDMP`.
    Matches(String),
    /// Does not: the key (or the format) differs.
    Mismatch { object: String, why: String },
    /// No backup under the prefix.
    None,
    /// Could not be checked (S3 failed or is not configured).
    Unchecked { why: String, error: bool },
}

async fn check(ctx: &ProbeContext) -> ProbeOutput {
    let secret = match ctx.backup_secret().await {
        Ok(s) => s,
        Err(e) => {
            return ProbeOutput::skipped(format!(
                "encryption not checked: the backup Secret is unavailable ({e})"
            ))
        }
    };
    let Some(key_secret) = secret.encryption_key.clone() else {
        return ProbeOutput::problem(
            "The backup Secret has no encryption-key: the backup job cannot encrypt",
            vec![Signal::KeyMissing],
        )
        .with_evidence(json!({ "key": { "present": false } }));
    };
    let key = key_secret.expose_secret().as_bytes();
    let minimum = ctx.settings.encryption.min_key_bytes;
    let mut signals = Vec::new();
    let mut problems = Vec::new();
    let mut evidence = json!({
        "key": { "present": true, "length": key.len(), "minimum": minimum, "fingerprint": fingerprint(key) },
    });
    if key.len() < minimum {
        signals.push(Signal::KeyTooShort {
            length: key.len(),
            minimum,
        });
        problems.push(format!(
            "the encryption key is {} bytes, shorter than the minimum of {minimum}",
            key.len()
        ));
    }

    // PBKDF2 with 100000 iterations is CPU work: keep it off the async threads, where it would
    // stall the other probes running at the same time.
    let owned = key_secret.clone();
    let trip = tokio::task::spawn_blocking(move || round_trip(owned.expose_secret().as_bytes()))
        .await
        .unwrap_or_else(|e| {
            Err(KeyError::Crashed {
                what: "round trip",
                why: e.to_string(),
            })
        });
    match trip {
        Ok(()) => evidence["round_trip"] = json!("ok"),
        Err(e) => {
            let detail = e.to_string();
            evidence["round_trip"] = json!({ "error": detail });
            problems.push(format!(
                "encrypting and decrypting a test block failed: {detail}"
            ));
            signals.push(Signal::RoundTripFailed { detail });
        }
    }

    let newest = match s3::job_s3(ctx).await {
        Ok(job) => newest_backup(&job, &key_secret).await,
        Err(why) => Newest::Unchecked {
            why: why.to_string(),
            error: false,
        },
    };
    let mut unchecked = None;
    let mut ok_words = String::new();
    match newest {
        Newest::Matches(object) => {
            evidence["newest_backup"] = json!({ "object": object, "decrypts_to_pg_dump": true });
            ok_words =
                format!("; the newest backup {object} decrypts to a pg_dump archive with it");
        }
        Newest::Mismatch { object, why } => {
            evidence["newest_backup"] =
                json!({ "object": object, "decrypts_to_pg_dump": false, "why": why });
            problems.push(format!(
                "the newest backup {object} was not made with the current key (or is not a pg_dump custom archive): {why}"
            ));
            signals.push(Signal::KeyMismatch { object });
        }
        Newest::None => {
            evidence["newest_backup"] =
                json!({ "object": null, "note": "no backup under the prefix yet" });
            ok_words = "; there is no backup yet to check it against".to_owned();
        }
        Newest::Unchecked { why, error } => {
            evidence["newest_backup"] = json!({ "checked": false, "error": why });
            unchecked = Some((why, error));
        }
    }

    if !signals.is_empty() {
        let mut summary = capitalize(&problems.join("; "));
        if let Some((why, _)) = &unchecked {
            summary = format!("{summary}; the newest backup was not checked: {why}");
        }
        return ProbeOutput::problem(summary, signals).with_evidence(evidence);
    }
    let key_words = format!(
        "The encryption key ({} bytes) is long enough and the round trip works",
        key.len()
    );
    match unchecked {
        Some((why, true)) => ProbeOutput::error(format!(
            "{key_words}; the newest backup could not be checked: {why}"
        ))
        .with_evidence(evidence),
        Some((why, false)) => ProbeOutput::ok(format!(
            "{key_words}; the newest backup was not checked: {why}"
        ))
        .with_evidence(evidence),
        None => ProbeOutput::ok(format!("{key_words}{ok_words}")).with_evidence(evidence),
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Why the key failed a check: the round trip of a test block, or a backup's first bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the decrypted block differs from the original")]
    RoundTripDiffers,
    #[error("it is an unencrypted pg_dump archive")]
    Unencrypted,
    #[error("its first block does not decrypt to PGDMP")]
    NotPgDump,
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The blocking task that ran the check (`what`) died.
    #[error("the {what} crashed: {why}")]
    Crashed { what: &'static str, why: String },
}

/// A backup object could not be read from S3 (the message is redacted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// Encrypts a random block with `key` and decrypts it again, in process.
fn round_trip(key: &[u8]) -> Result<(), KeyError> {
    let block: [u8; 32] = rand::random();
    let sealed = crypto::encrypt(key, &block);
    match crypto::decrypt(key, &sealed) {
        Ok(plain) if plain == block => Ok(()),
        Ok(_) => Err(KeyError::RoundTripDiffers),
        Err(e) => Err(e.into()),
    }
}

/// Finds the newest backup and checks that its first bytes decrypt to `PGDMP` with `key`.
async fn newest_backup(job: &JobS3, key: &SecretString) -> Newest {
    let unchecked = |doing: &str, f: aws::Failure| Newest::Unchecked {
        why: job.redact(&format!("{doing} failed: {}", f.words)),
        error: true,
    };
    let listing = match list_backups(&job.client, &job.bucket, &job.prefix).await {
        Ok(l) => l,
        Err(e) => return unchecked("listing the backups in S3", aws::explain("S3", &e)),
    };
    let Some(newest) = listing.newest() else {
        // A cut listing cannot say there is no backup.
        return match job.incomplete(&listing) {
            Some(why) => Newest::Unchecked { why, error: true },
            None => Newest::None,
        };
    };
    let object = newest.key.clone();
    match object_matches_key(job, key, &object).await {
        Ok(Ok(())) => Newest::Matches(object),
        Ok(Err(why)) => Newest::Mismatch {
            object,
            why: why.to_string(),
        },
        Err(why) => Newest::Unchecked {
            why: why.to_string(),
            error: true,
        },
    }
}

/// Reads the first bytes of `object` and checks that they decrypt to a pg_dump archive with
/// `key`. `Ok(Err(why))`: they do not; `Err(why)`: the object could not be read. Shared with the
/// verification after a fix.
pub async fn object_matches_key(
    job: &JobS3,
    key: &SecretString,
    object: &str,
) -> Result<Result<(), KeyError>, Unreadable> {
    let got = job
        .client
        .get_object()
        .bucket(&job.bucket)
        .key(object)
        .range(format!("bytes=0-{}", HEAD_BYTES - 1))
        .send()
        .await;
    let head = match got {
        Ok(out) => match out.body.collect().await {
            Ok(bytes) => bytes.into_bytes(),
            Err(e) => {
                return Err(Unreadable(job.redact(&format!(
                    "reading the start of {object} from S3 failed: {}",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ))))
            }
        },
        Err(e) => {
            let f = aws::explain("S3", &e);
            return Err(Unreadable(job.redact(&format!(
                "reading the start of {object} from S3 failed: {}",
                f.words
            ))));
        }
    };
    let key = key.clone();
    Ok(
        tokio::task::spawn_blocking(move || verdict(key.expose_secret().as_bytes(), &head))
            .await
            .unwrap_or_else(|e| {
                Err(KeyError::Crashed {
                    what: "check",
                    why: e.to_string(),
                })
            }),
    )
}

/// Whether the first bytes of a backup decrypt to a pg_dump archive; `Err` says what they are.
fn verdict(key: &[u8], head: &[u8]) -> Result<(), KeyError> {
    if head.starts_with(PG_DUMP_MAGIC) {
        return Err(KeyError::Unencrypted);
    }
    match crypto::decrypt_prefix(key, head) {
        Ok(plain) if plain.starts_with(PG_DUMP_MAGIC) => Ok(()),
        Ok(_) => Err(KeyError::NotPgDump),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_decide_whether_a_backup_matches_the_key() {
        let sealed = crypto::encrypt(
            b"current-key",
            b"PGDMP\x01\x0e\x00 rest of a dump........................",
        );
        assert_eq!(verdict(b"current-key", &sealed[..64]), Ok(()));
        assert!(verdict(b"older-key", &sealed[..64])
            .unwrap_err()
            .to_string()
            .contains("does not decrypt to PGDMP"));
        assert!(verdict(b"current-key", b"PGDMP\x01\x0e plain")
            .unwrap_err()
            .to_string()
            .contains("unencrypted"));
        assert!(
            verdict(b"current-key", b"something else entirely, not openssl")
                .unwrap_err()
                .to_string()
                .contains("not openssl")
        );
    }

    #[test]
    fn the_round_trip_works_with_any_key() {
        assert_eq!(round_trip(b"k"), Ok(()));
    }
}
