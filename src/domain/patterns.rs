//! The runbook's "Common Error Patterns", and the AWS error codes, recognised in log lines.

use std::sync::OnceLock;

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One error pattern from the runbook (or an AWS error code seen in the job's output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogPattern {
    ConnectionRefused,
    Timeout,
    HostUnreachable,
    AuthenticationFailed,
    PermissionDenied,
    RoleDoesNotExist,
    NoSpaceLeft,
    DiskFull,
    AccessDenied,
    BucketDoesNotExist,
    InvalidCredentials,
    EncryptionFailed,
    InvalidKey,
    OpensslError,
    /// AWS error code `AccessDenied`.
    AwsAccessDenied,
    /// AWS error code `NoSuchBucket`.
    AwsNoSuchBucket,
    /// AWS error code `InvalidAccessKeyId`.
    AwsInvalidAccessKeyId,
    /// AWS error code `SignatureDoesNotMatch`.
    AwsSignatureDoesNotMatch,
    /// pg_dump refused a server newer than itself (`aborting because of server version mismatch`).
    ServerVersionMismatch,
}

/// Patterns in match order: (pattern, regex). Runbook phrases are case-insensitive; AWS error
/// codes are matched as written, as whole words.
const TABLE: &[(LogPattern, &str)] = &[
    (LogPattern::ConnectionRefused, r"(?i)connection refused"),
    (
        LogPattern::Timeout,
        r"(?i)\btime[d]?[ -]?out\b|\btimeout expired\b",
    ),
    (
        LogPattern::HostUnreachable,
        r"(?i)host unreachable|no route to host|could not translate host name|name or service not known|temporary failure in name resolution",
    ),
    (
        LogPattern::AuthenticationFailed,
        r"(?i)authentication failed",
    ),
    (LogPattern::PermissionDenied, r"(?i)permission denied"),
    (
        LogPattern::RoleDoesNotExist,
        r#"(?i)role "?[^"\s]*"? does not exist"#,
    ),
    (LogPattern::NoSpaceLeft, r"(?i)no space left on device"),
    (
        LogPattern::DiskFull,
        r"(?i)disk (is )?full|disk quota exceeded",
    ),
    (LogPattern::AccessDenied, r"(?i)access denied"),
    (
        LogPattern::BucketDoesNotExist,
        r"(?i)bucket does not exist|specified bucket does not exist",
    ),
    (
        LogPattern::InvalidCredentials,
        r"(?i)invalid credentials|security token included in the request is invalid",
    ),
    (LogPattern::EncryptionFailed, r"(?i)encryption failed"),
    (LogPattern::InvalidKey, r"(?i)invalid key"),
    (
        LogPattern::OpensslError,
        r"(?i)openssl error|bad decrypt|\berror:[0-9A-F]{8}:|digital envelope routines",
    ),
    (LogPattern::AwsAccessDenied, r"\bAccessDenied\b"),
    (LogPattern::AwsNoSuchBucket, r"\bNoSuchBucket\b"),
    (LogPattern::AwsInvalidAccessKeyId, r"\bInvalidAccessKeyId\b"),
    (
        LogPattern::AwsSignatureDoesNotMatch,
        r"\bSignatureDoesNotMatch\b",
    ),
    (
        LogPattern::ServerVersionMismatch,
        r"(?i)server version mismatch",
    ),
];

fn set() -> &'static RegexSet {
    static SET: OnceLock<RegexSet> = OnceLock::new();
    SET.get_or_init(|| {
        RegexSet::new(TABLE.iter().map(|(_, re)| *re)).unwrap_or_else(|_| RegexSet::empty())
    })
}

/// Every runbook pattern the line matches, in table order.
pub fn classify(line: &str) -> Vec<LogPattern> {
    set().matches(line).iter().map(|i| TABLE[i].0).collect()
}

/// Redacts things in a log line that look like credentials before it becomes evidence
/// (`password=…`, `-k …` / `-pass pass:…` for openssl, AWS secret-looking tokens).
pub fn redact(line: &str) -> String {
    static RE: OnceLock<Vec<Regex>> = OnceLock::new();
    let res = RE.get_or_init(|| {
        [
            r#"(?i)(password|passwd|pwd|secret|token|key)(\s*[=:]\s*)("[^"]*"|'[^']*'|\S+)"#,
            r#"(?i)(\s-k\s+|\s-pass\s+pass:)("[^"]*"|'[^']*'|\S+)"#,
            r"(?i)(postgres(?:ql)?://[^:/\s]+:)[^@\s]+(@)",
            r"\b[A-Za-z0-9/+]{40}\b",
            // SQL: `PASSWORD 'x'` (CREATE/ALTER ROLE as a server log shows a statement).
            r#"(?i)(\bpassword\s+)('(?:[^']|'')*'|"[^"]*")"#,
        ]
        .iter()
        .filter_map(|r| Regex::new(r).ok())
        .collect()
    });
    let mut out = line.to_owned();
    out = res[0].replace_all(&out, "$1$2[redacted]").into_owned();
    out = res[1].replace_all(&out, "$1[redacted]").into_owned();
    out = res[2].replace_all(&out, "$1[redacted]$2").into_owned();
    out = res[3].replace_all(&out, "[redacted]").into_owned();
    out = res[4].replace_all(&out, "$1[redacted]").into_owned();
    out
}

#[cfg(test)]
mod tests {
    use super::LogPattern::*;
    use super::*;

    #[test]
    fn runbook_phrases_are_recognised() {
        let cases = [
            ("pg_dump: error: connection to server at \"10.0.0.5\", port 5432 failed: Connection refused", vec![ConnectionRefused]),
            ("pg_dump: error: connection to server failed: timeout expired", vec![Timeout]),
            ("could not translate host name \"postgres-primary\" to address: Name or service not known", vec![HostUnreachable]),
            ("FATAL:  password authentication failed for user \"backup_user\"", vec![AuthenticationFailed]),
            ("pg_dump: error: query failed: ERROR:  permission denied for table users", vec![PermissionDenied]),
            ("FATAL:  role \"backup_user\" does not exist", vec![RoleDoesNotExist]),
            ("pg_dump: error: could not write to output file: No space left on device", vec![NoSpaceLeft]),
            ("write error: disk full", vec![DiskFull]),
            ("encryption failed: invalid key length", vec![EncryptionFailed, InvalidKey]),
            ("bad decrypt", vec![OpensslError]),
            ("40F7B1E0:error:1C800064:Provider routines:ossl_cipher_unpadblock:bad decrypt", vec![OpensslError]),
            (
                "upload failed: An error occurred (AccessDenied) when calling the PutObject operation: Access Denied",
                vec![AccessDenied, AwsAccessDenied],
            ),
            ("An error occurred (NoSuchBucket) when calling the PutObject operation: The specified bucket does not exist", vec![BucketDoesNotExist, AwsNoSuchBucket]),
            ("An error occurred (InvalidAccessKeyId) when calling the PutObject operation", vec![AwsInvalidAccessKeyId]),
            ("An error occurred (SignatureDoesNotMatch) when calling the PutObject operation", vec![AwsSignatureDoesNotMatch]),
            ("pg_dump: error: aborting because of server version mismatch", vec![ServerVersionMismatch]),
            ("pg_dump: dumping contents of table \"public.users\"", vec![]),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{line}");
        }
    }

    #[test]
    fn credentials_in_log_lines_are_redacted() {
        let line = "openssl enc -aes-256-cbc -k s3cr3tK3y -in f; PGPASSWORD=hunter2 psql postgres://u:pw@h/db AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let r = redact(line);
        for secret in ["s3cr3tK3y", "hunter2", ":pw@", "wJalrXUtnFEMI"] {
            assert!(!r.contains(secret), "{secret} survived in {r}");
        }
        assert!(r.contains("openssl enc -aes-256-cbc"));
    }
}
