//! AWS SDK clients and what their errors mean. Owns how the service talks to S3 (with the backup
//! job's own credentials, from its Secret) and IAM (with the service's credentials, from the
//! default provider chain), and turns SDK errors into an error code plus plain words.
//!
//! Every client gets its HTTP client from here: rustls with ring, built explicitly, because the
//! SDK's default HTTPS client would pull in aws-lc (removed from the build on purpose). Timeouts
//! and retries are bounded so that a probe answers within its deadline instead of being cut off.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region, SharedHttpClient};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_types::error::display::DisplayErrorContext;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{IamSettings, S3Settings};

/// How long AWS calls may take, and how often they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Establishing a connection.
    pub connect: Duration,
    /// One attempt of an operation.
    pub attempt: Duration,
    /// The whole operation, retries included.
    pub operation: Duration,
    /// Attempts per operation (1 = no retry).
    pub max_attempts: u32,
}

impl Limits {
    /// Limits for a probe with `deadline`: a probe makes at most three rounds of calls one after
    /// another (e.g. HeadBucket, then PutObject, then DeleteObject), so each operation gets a
    /// quarter of the deadline and the probe still answers with what it learned.
    pub fn for_deadline(deadline: Duration) -> Self {
        let quarter = (deadline / 4).max(Duration::from_millis(100));
        Self {
            connect: quarter.min(Duration::from_secs(2)),
            attempt: quarter,
            operation: quarter,
            max_attempts: 2,
        }
    }

    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }

    fn retries(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(50))
    }
}

/// The HTTP client for every AWS SDK client: rustls with the ring crypto provider. One per
/// process: it holds the TLS roots and the connection pools, and the SDK keys its connectors by
/// timeout settings, so clients with different limits still share it.
pub fn http_client() -> SharedHttpClient {
    static CLIENT: std::sync::OnceLock<SharedHttpClient> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(Provider::Rustls(CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// Static credentials of the backup job, as its Secret holds them.
pub fn job_credentials(
    access_key_id: &SecretString,
    secret_access_key: &SecretString,
) -> Credentials {
    Credentials::new(
        access_key_id.expose_secret(),
        secret_access_key.expose_secret(),
        None,
        None,
        "backup-secret",
    )
}

/// An S3 client acting as the backup job: its credentials, the configured region and, when set,
/// an S3-compatible endpoint (MinIO, moto) with path-style addressing as configured. Reads no
/// environment or profile: everything comes from the settings and the Secret.
pub fn s3_client(
    settings: &S3Settings,
    credentials: Credentials,
    limits: Limits,
) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client())
        .region(Region::new(settings.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(settings.force_path_style)
        .timeout_config(limits.timeouts())
        .retry_config(limits.retries())
        // Checksums only where S3 requires them: S3-compatible stores do not all know the
        // newer ones, and a ranged read has no whole-object checksum to validate.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
    if !settings.endpoint.is_empty() {
        config = config.endpoint_url(settings.endpoint.clone());
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

/// An IAM client with the service's own credentials: `credentials` when given (tests, tools),
/// otherwise the SDK's default provider chain (environment, profile, web identity, container,
/// instance metadata). `region` only picks the signing region: IAM is global.
pub async fn iam_client(
    settings: &IamSettings,
    region: &str,
    credentials: Option<Credentials>,
    limits: Limits,
) -> aws_sdk_iam::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .region(Region::new(region.to_owned()))
        .timeout_config(limits.timeouts())
        .retry_config(limits.retries());
    if !settings.endpoint.is_empty() {
        loader = loader.endpoint_url(settings.endpoint.clone());
    }
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    aws_sdk_iam::Client::new(&loader.load().await)
}

/// The broad meaning of a failed AWS call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The credentials are valid but the action is not allowed.
    AccessDenied,
    /// An HTTP 403 without an error body (HEAD requests): denied, or unknown credentials.
    Forbidden,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The access key id is unknown.
    InvalidAccessKeyId,
    /// The signature was refused: the secret access key does not match the key id.
    SignatureDoesNotMatch,
    /// The named thing does not exist (HTTP 404 without a more precise code, IAM NoSuchEntity).
    NotFound,
    /// No answer: connection refused, DNS, TLS, or timed out.
    Unreachable,
    /// Anything else; the code and words say what.
    Other,
}

/// A failed AWS call, explained: the service's error code (or a stand-in such as `Unreachable`)
/// and plain words an on-call engineer understands. Never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub code: String,
    pub words: String,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.words)
    }
}

impl Failure {
    /// True when the credentials themselves are refused (unknown key id or wrong secret).
    pub fn is_invalid_credentials(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::InvalidAccessKeyId | FailureKind::SignatureDoesNotMatch
        )
    }
}

/// Explains an SDK error of a call to `service` ("S3", "IAM").
pub fn explain<E>(service: &str, err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let failure = |kind, code: &str, words: String| Failure {
        kind,
        code: code.to_owned(),
        words,
        status,
    };
    match err {
        SdkError::TimeoutError(_) => failure(
            FailureKind::Unreachable,
            "Timeout",
            format!("{service} endpoint unreachable: timed out"),
        ),
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() {
                "timed out".to_owned()
            } else {
                DisplayErrorContext(err).to_string()
            };
            failure(
                FailureKind::Unreachable,
                "Unreachable",
                format!("{service} endpoint unreachable: {why}"),
            )
        }
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or_default();
            let message = e.err().message().unwrap_or_default();
            match (code, status) {
                ("AccessDenied" | "AccessDeniedException" | "AllAccessDisabled", _) => {
                    failure(FailureKind::AccessDenied, code, "access denied".to_owned())
                }
                ("NoSuchBucket", _) => failure(FailureKind::NoSuchBucket, code, "bucket does not exist".to_owned()),
                ("InvalidAccessKeyId" | "InvalidClientTokenId", _) => {
                    failure(FailureKind::InvalidAccessKeyId, code, "the access key id is unknown".to_owned())
                }
                ("SignatureDoesNotMatch", _) => {
                    failure(FailureKind::SignatureDoesNotMatch, code, "the secret access key is wrong".to_owned())
                }
                ("NoSuchEntity", _) => failure(FailureKind::NotFound, code, non_empty(message, "does not exist")),
                ("" | "NotFound", Some(404)) => failure(FailureKind::NotFound, "NotFound", "not found".to_owned()),
                ("" | "Forbidden", Some(403)) => failure(
                    FailureKind::Forbidden,
                    "Forbidden",
                    "access denied (HTTP 403 without details: a denied action or unknown credentials)".to_owned(),
                ),
                ("", status) => failure(
                    FailureKind::Other,
                    "Unknown",
                    format!("{service} answered HTTP {} without an error code", status.unwrap_or_default()),
                ),
                (code, _) => failure(FailureKind::Other, code, format!("{code}: {}", non_empty(message, "no message"))),
            }
        }
        SdkError::ResponseError(_) => failure(
            FailureKind::Other,
            "InvalidResponse",
            format!(
                "{service} sent a response that could not be read: {}",
                DisplayErrorContext(err)
            ),
        ),
        SdkError::ConstructionFailure(_) => failure(
            FailureKind::Other,
            "RequestNotBuilt",
            format!(
                "the {service} request could not be built: {}",
                DisplayErrorContext(err)
            ),
        ),
        _ => failure(
            FailureKind::Other,
            "Unknown",
            format!("{service} call failed: {}", DisplayErrorContext(err)),
        ),
    }
}

fn non_empty(text: &str, otherwise: &str) -> String {
    if text.is_empty() {
        otherwise.to_owned()
    } else {
        text.to_owned()
    }
}

/// Replaces every occurrence of each secret in `text` with `[redacted]`. A last guard for text
/// that came from elsewhere (an error message from a server) before it goes into a finding.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .fold(text.to_owned(), |acc, s| acc.replace(s, "[redacted]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_for_a_probe_fit_three_rounds_of_calls_in_the_deadline() {
        let l = Limits::for_deadline(Duration::from_secs(5));
        assert_eq!(l.operation, Duration::from_millis(1250));
        assert!(l.operation * 3 < Duration::from_secs(5));
        assert_eq!(l.connect, Duration::from_millis(1250));
        assert_eq!(
            Limits::for_deadline(Duration::from_secs(60)).connect,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn redact_removes_every_secret_occurrence() {
        let out = redact(
            "key AKIACANARY1 and sekrit-canary twice sekrit-canary",
            &["AKIACANARY1", "sekrit-canary", ""],
        );
        assert_eq!(out, "key [redacted] and [redacted] twice [redacted]");
    }
}
