//! The backup Secret (runbook: `postgres-backup-secret`): read once per diagnosis and shared, as
//! the backup job reads it; and the `secret` probe, which checks it holds every key the job needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use secrecy::{ExposeSecret, SecretString};

use super::{fingerprint, Probe, ProbeContext, ProbeOutput, Signal};

/// The keys the backup job takes from its Secret (the runbook's manual backup Job).
pub const REQUIRED_KEYS: [&str; 6] = [
    "postgres-user",
    "postgres-password",
    "s3-bucket",
    "encryption-key",
    "aws-access-key-id",
    "aws-secret-access-key",
];

/// The backup job's credentials. Values are secrets except the user and bucket names.
#[derive(Clone, Default)]
pub struct BackupSecret {
    pub postgres_user: Option<String>,
    pub postgres_password: Option<SecretString>,
    pub s3_bucket: Option<String>,
    pub encryption_key: Option<SecretString>,
    pub aws_access_key_id: Option<SecretString>,
    pub aws_secret_access_key: Option<SecretString>,
    /// Required keys that are absent or empty.
    pub missing: Vec<String>,
}

impl std::fmt::Debug for BackupSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSecret")
            .field("postgres_user", &self.postgres_user)
            .field("s3_bucket", &self.s3_bucket)
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}

impl BackupSecret {
    /// Reads the Secret's data map; empty values count as missing.
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Self {
        let text = |k: &str| {
            data.get(k)
                .map(|b| {
                    String::from_utf8_lossy(&b.0)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned()
                })
                .filter(|s| !s.is_empty())
        };
        let secret = |k: &str| text(k).map(SecretString::from);
        let missing = REQUIRED_KEYS
            .iter()
            .filter(|k| text(k).is_none())
            .map(|k| (*k).to_owned())
            .collect();
        Self {
            postgres_user: text("postgres-user"),
            postgres_password: secret("postgres-password"),
            s3_bucket: text("s3-bucket"),
            encryption_key: secret("encryption-key"),
            aws_access_key_id: secret("aws-access-key-id"),
            aws_secret_access_key: secret("aws-secret-access-key"),
            missing,
        }
    }

    /// Presence, length and fingerprint of each key: what evidence may say about a Secret.
    pub fn describe(&self) -> serde_json::Value {
        let s = |v: &Option<SecretString>| match v {
            Some(v) => serde_json::json!({
                "present": true,
                "length": v.expose_secret().len(),
                "fingerprint": fingerprint(v.expose_secret().as_bytes()),
            }),
            None => serde_json::json!({ "present": false }),
        };
        serde_json::json!({
            "postgres-user": self.postgres_user,
            "postgres-password": s(&self.postgres_password),
            "s3-bucket": self.s3_bucket,
            "encryption-key": s(&self.encryption_key),
            "aws-access-key-id": s(&self.aws_access_key_id),
            "aws-secret-access-key": s(&self.aws_secret_access_key),
        })
    }
}

/// Why the Secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretUnavailable {
    #[error("no Kubernetes API is configured")]
    NoKubernetes,
    #[error("Secret {0} does not exist")]
    NotFound(String),
    #[error("reading Secret {name} failed: {reason}")]
    Api { name: String, reason: String },
}

/// Backup Secret values this process has read, for the notifier to scrub from everything it
/// renders (a value quoted in a log line or an error message never reaches Slack).
static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Too short a value would scrub ordinary words; such a value is no secret worth the name.
const SCRUB_MIN_LEN: usize = 4;

/// Adds the Secret's values to those scrubbed (done by every read of the Secret).
pub(crate) fn remember(secret: &BackupSecret) {
    let values = [
        &secret.postgres_password,
        &secret.encryption_key,
        &secret.aws_access_key_id,
        &secret.aws_secret_access_key,
    ];
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    for v in values.into_iter().flatten() {
        let v = v.expose_secret();
        if v.len() >= SCRUB_MIN_LEN && !seen.iter().any(|s| s == v) {
            seen.push(v.to_owned());
        }
    }
}

/// Every backup Secret value read so far by this process.
pub fn seen_values() -> Vec<String> {
    SEEN.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Reads the Secret `name` in `namespace`.
pub async fn load(
    kube: Option<&kube::Client>,
    namespace: &str,
    name: &str,
) -> Result<BackupSecret, SecretUnavailable> {
    let client = kube.ok_or(SecretUnavailable::NoKubernetes)?;
    let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(secret)) => {
            let secret = BackupSecret::from_data(&secret.data.unwrap_or_default());
            remember(&secret);
            Ok(secret)
        }
        Ok(None) => Err(SecretUnavailable::NotFound(name.to_owned())),
        // kube's error text names the request, never the Secret's data.
        Err(e) => Err(SecretUnavailable::Api {
            name: name.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Checks that the backup Secret exists and holds every key the job needs.
pub struct SecretProbe;

impl Probe for SecretProbe {
    fn name(&self) -> &'static str {
        "secret"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let name = ctx.settings.kubernetes.backup_secret.clone();
            match ctx.backup_secret().await {
                Ok(secret) if secret.missing.is_empty() => {
                    ProbeOutput::ok(format!("Secret {name} holds all {} keys the backup job needs", REQUIRED_KEYS.len()))
                        .with_evidence(serde_json::json!({ "secret": name, "keys": secret.describe() }))
                }
                Ok(secret) => ProbeOutput::problem(
                    format!("Secret {name} lacks {}", secret.missing.join(", ")),
                    secret.missing.iter().map(|k| Signal::SecretKeyMissing { key: k.clone() }).collect(),
                )
                .with_evidence(serde_json::json!({ "secret": name, "keys": secret.describe(), "missing": secret.missing })),
                Err(SecretUnavailable::NotFound(n)) => ProbeOutput::problem(
                    format!("Secret {n} does not exist: the backup job cannot start"),
                    vec![Signal::SecretMissing { name: n.clone() }],
                )
                .with_evidence(serde_json::json!({ "secret": n })),
                Err(SecretUnavailable::NoKubernetes) => ProbeOutput::skipped("no Kubernetes API configured"),
                Err(e) => ProbeOutput::error(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn missing_and_empty_keys_are_reported_and_values_never_shown() {
        let s = BackupSecret::from_data(&data(&[
            ("postgres-user", "backup_user"),
            ("postgres-password", "canary-pw-31f"),
            ("s3-bucket", "link-backups"),
            ("encryption-key", ""),
            ("aws-access-key-id", "AKIACANARY"),
        ]));
        assert_eq!(s.missing, ["encryption-key", "aws-secret-access-key"]);
        let shown = format!("{s:?} {}", s.describe());
        assert!(
            !shown.contains("canary") && !shown.contains("AKIACANARY"),
            "{shown}"
        );
        assert_eq!(s.describe()["postgres-password"]["length"], 13);
        let fp = s.describe()["postgres-password"]["fingerprint"].to_string();
        assert!(fp.contains("hmac-sha256:"), "{fp}");
    }

    #[test]
    fn the_values_of_a_secret_read_are_remembered_for_scrubbing() {
        remember(&BackupSecret::from_data(&data(&[
            ("postgres-password", "seen-pw-8c1"),
            ("encryption-key", "k"),
        ])));
        let seen = seen_values();
        assert!(seen.contains(&"seen-pw-8c1".to_owned()));
        assert!(!seen.contains(&"k".to_owned()), "too short to scrub");
    }
}
