//! S3 as the backup job sees it: the job's client with its bucket and prefix ([`JobS3`], built by
//! `crate::probes::s3::job_s3` from the settings and the Secret), and the bounded listing of the
//! backups under the prefix that the s3 probe, the watchdog, the restore test and verification
//! share ([`list_backups`]): every key, one request per 1000, up to a ceiling of
//! [`MAX_LIST_PAGES`] pages; a listing that the ceiling or an error cut says so ([`Listing::cut`]),
//! so that no caller concludes "no backup" or "stale" from the part it did not read.

use aws_sdk_s3::error::SdkError;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::aws;

/// Every object this probe writes has this in its key, so that listings of backups skip it.
pub const PROBE_OBJECT_MARKER: &str = "backup-remediator-probe-";

/// Pages of 1000 keys read at most by one listing (250 000 keys: 4 databases backed up hourly
/// for over 7 years). Bounds time and memory (see docs/src/performance.md for 100 000 keys); a
/// listing it cuts is incomplete and says so.
pub const MAX_LIST_PAGES: u32 = 250;

/// Keys asked for per ListObjectsV2 request (S3's maximum).
const KEYS_PER_PAGE: i32 = 1000;

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

    /// Why `listing` (of this bucket and prefix) is incomplete, redacted; `None`: it is complete.
    pub fn incomplete(&self, listing: &Listing) -> Option<String> {
        listing.cut.as_ref().map(|cut| {
            self.redact(&format!(
                "the listing of s3://{}/{} is incomplete: {cut}; {} keys read",
                self.bucket, self.prefix, listing.keys
            ))
        })
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub last_modified: Option<DateTime<Utc>>,
    pub size: i64,
}

/// Why a listing is incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The ceiling of pages was reached with more keys left.
    Ceiling { pages: u32 },
    /// A later page failed (the first page's failure is the listing's `Err`). `words` are S3's,
    /// not yet redacted: render them through [`JobS3::redact`].
    Failed { after_pages: u32, words: String },
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Ceiling { pages } => write!(
                f,
                "the listing stopped at its ceiling of {pages} pages ({} keys) with more keys left",
                u64::from(*pages) * KEYS_PER_PAGE as u64
            ),
            Cut::Failed { after_pages, words } => {
                write!(f, "the listing failed after {after_pages} pages ({words})")
            }
        }
    }
}

/// Every backup under the prefix, or as many as could be read and why not all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    /// The backups read (probe objects and keys outside the prefix's directory excluded),
    /// oldest first: by LastModified, then key. Never by key order alone.
    pub backups: Vec<ObjectInfo>,
    /// Keys S3 returned, backups or not.
    pub keys: u64,
    pub total_bytes: i64,
    /// ListObjectsV2 requests made (one per page of up to 1000 keys).
    pub pages: u32,
    /// `None`: every key under the prefix was read.
    pub cut: Option<Cut>,
}

impl Listing {
    /// Whether every key under the prefix was read.
    pub fn complete(&self) -> bool {
        self.cut.is_none()
    }

    /// The most recently modified backup (ties: the greatest key).
    pub fn newest(&self) -> Option<&ObjectInfo> {
        self.backups.last()
    }

    /// The most recently modified backup for which `matches` holds.
    pub fn newest_where(&self, matches: impl Fn(&ObjectInfo) -> bool) -> Option<&ObjectInfo> {
        self.backups.iter().rev().find(|o| matches(o))
    }

    /// The backups modified at or after `since`, oldest first (S3 keeps whole seconds, so
    /// `since` is compared truncated to the second).
    pub fn since(&self, since: DateTime<Utc>) -> &[ObjectInfo] {
        let from = self.backups.partition_point(|o| {
            o.last_modified
                .is_none_or(|t| t.timestamp() < since.timestamp())
        });
        &self.backups[from..]
    }
}

/// The error of a listing whose first page failed: nothing was read.
pub type ListError = SdkError<
    aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
    aws_sdk_s3::config::http::HttpResponse,
>;

/// `prefix` as a directory: `backups` means `backups/`, so `backups-staging/` is not under it.
pub fn directory(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    }
}

/// Lists every backup under `prefix` (treated as a directory, see [`directory`]), at most
/// [`MAX_LIST_PAGES`] pages, skipping probe objects. A plain function of the bucket and prefix,
/// so one listing can serve every target that shares them.
pub async fn list_backups(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Listing, ListError> {
    list_backups_upto(client, bucket, prefix, MAX_LIST_PAGES).await
}

/// [`list_backups`] with another ceiling of pages.
pub async fn list_backups_upto(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    max_pages: u32,
) -> Result<Listing, ListError> {
    let dir = directory(prefix);
    let mut listing = Listing::default();
    let mut token: Option<String> = None;
    loop {
        if listing.pages >= max_pages {
            listing.cut = Some(Cut::Ceiling { pages: max_pages });
            break;
        }
        // The prefix is sent as configured (moto's signature check with IAM enforced refuses a
        // `/` in it); keys outside its directory are skipped below.
        let sent = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(KEYS_PER_PAGE)
            .set_continuation_token(token.take())
            .send()
            .await;
        let page = match sent {
            Ok(page) => page,
            Err(e) if listing.pages == 0 => return Err(e),
            Err(e) => {
                listing.cut = Some(Cut::Failed {
                    after_pages: listing.pages,
                    words: super::aws::explain("S3", &e).words,
                });
                break;
            }
        };
        listing.pages += 1;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            listing.keys += 1;
            if is_probe_object(key) || !key.starts_with(&dir) {
                continue;
            }
            let info = ObjectInfo {
                key: key.to_owned(),
                last_modified: object
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                size: object.size().unwrap_or_default(),
            };
            listing.total_bytes += info.size;
            listing.backups.push(info);
        }
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() || page.is_truncated() != Some(true) {
            break;
        }
    }
    listing
        .backups
        .sort_unstable_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, secs: Option<i64>) -> ObjectInfo {
        ObjectInfo {
            key: key.to_owned(),
            last_modified: secs.and_then(|s| DateTime::from_timestamp(s, 0)),
            size: 1,
        }
    }

    #[test]
    fn a_prefix_is_a_directory() {
        assert_eq!(directory("postgres-backups"), "postgres-backups/");
        assert_eq!(directory("postgres-backups/"), "postgres-backups/");
        assert_eq!(directory(""), "");
        assert!(
            !"postgres-backups-staging/x_db.sql.enc".starts_with(&directory("postgres-backups"))
        );
    }

    #[test]
    fn since_and_newest_go_by_time_not_key() {
        let listing = Listing {
            backups: vec![
                object("z-unknown", None),
                object("z-old", Some(100)),
                object("a-new", Some(200)),
                object("b-newer", Some(300)),
            ],
            ..Listing::default()
        };
        assert_eq!(listing.newest().unwrap().key, "b-newer");
        let keys: Vec<&str> = listing
            .since(DateTime::from_timestamp(200, 500_000_000).unwrap())
            .iter()
            .map(|o| o.key.as_str())
            .collect();
        assert_eq!(keys, ["a-new", "b-newer"]);
        assert_eq!(
            listing
                .newest_where(|o| o.key.starts_with('a'))
                .unwrap()
                .key,
            "a-new"
        );
    }
}
