//! S3 as the backup job sees it: the job's client with its bucket and prefix ([`JobS3`], built by
//! `crate::probes::s3::job_s3` from the settings and the Secret), and the bounded listing of the
//! backups under the prefix that the s3 probe, the watchdog, the restore test and verification
//! share ([`list_backups_since`]).

use aws_sdk_s3::error::SdkError;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::aws;

/// Every object this probe writes has this in its key, so that listings of backups skip it.
pub const PROBE_OBJECT_MARKER: &str = "backup-remediator-probe-";

/// Pages of 1000 keys read at most when looking for the newest backup: bounds time and memory.
pub const MAX_LIST_PAGES: usize = 10;

/// Whether `key` is an object this probe wrote (never a backup).
pub fn is_probe_object(key: &str) -> bool {
    key.contains(PROBE_OBJECT_MARKER)
}

/// What a probe needs to act as the backup job against S3.
pub struct JobS3 {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
    /// Where the bucket name came from: "settings" or "secret".
    pub bucket_source: &'static str,
    /// Evidence about the credentials used (fingerprint of the key id, never a value).
    pub credentials: Value,
    /// Every secret value of the backup Secret, to scrub server text before it goes in a finding.
    secrets: Vec<SecretString>,
}

impl JobS3 {
    /// The job's S3 access; `secrets` are the backup Secret's values, for [`JobS3::redact`].
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
        bucket_source: &'static str,
        credentials: Value,
        secrets: Vec<SecretString>,
    ) -> Self {
        Self {
            client,
            bucket,
            prefix,
            bucket_source,
            credentials,
            secrets,
        }
    }

    /// `text` with every secret value of the backup Secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let values: Vec<&str> = self.secrets.iter().map(|s| s.expose_secret()).collect();
        aws::redact(text, &values)
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub last_modified: Option<DateTime<Utc>>,
    pub size: i64,
}

/// What a bounded listing under the prefix found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// The most recently modified backup (ties: the greatest key, as backups are named by date).
    pub newest: Option<ObjectInfo>,
    /// Backups seen (probe objects excluded).
    pub objects: u64,
    pub total_bytes: i64,
    /// False when the listing stopped after [`MAX_LIST_PAGES`] pages.
    pub complete: bool,
    /// Backups modified at or after the `since` given to [`list_backups_since`], oldest first.
    pub recent: Vec<ObjectInfo>,
    /// ListObjectsV2 requests made (one per page of up to 1000 keys).
    pub pages: u32,
}

/// The error of a listing.
pub type ListError = SdkError<
    aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
    aws_sdk_s3::config::http::HttpResponse,
>;

/// Lists the backups under `prefix`, at most [`MAX_LIST_PAGES`] pages, skipping probe objects.
pub async fn list_backups(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Listing, ListError> {
    list_backups_since(client, bucket, prefix, None).await
}

/// [`list_backups`], also collecting the backups modified at or after `since` (S3 keeps whole
/// seconds, so `since` is compared truncated to the second).
pub async fn list_backups_since(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    since: Option<DateTime<Utc>>,
) -> Result<
    Listing,
    SdkError<
        aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
        aws_sdk_s3::config::http::HttpResponse,
    >,
> {
    let mut listing = Listing::default();
    let mut token: Option<String> = None;
    for _ in 0..MAX_LIST_PAGES {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await?;
        listing.pages += 1;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if is_probe_object(key) {
                continue;
            }
            let info = ObjectInfo {
                key: key.to_owned(),
                last_modified: object
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                size: object.size().unwrap_or_default(),
            };
            listing.objects += 1;
            listing.total_bytes += info.size;
            if let (Some(since), Some(modified)) = (since, info.last_modified) {
                if modified.timestamp() >= since.timestamp() {
                    listing.recent.push(info.clone());
                }
            }
            let newer = match &listing.newest {
                None => true,
                Some(n) => (info.last_modified, &info.key) > (n.last_modified, &n.key),
            };
            if newer {
                listing.newest = Some(info);
            }
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() || page.is_truncated() != Some(true) {
            listing.complete = true;
            listing
                .recent
                .sort_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
            return Ok(listing);
        }
    }
    Ok(listing)
}
