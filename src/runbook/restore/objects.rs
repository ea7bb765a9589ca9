//! Finding a database's backups among the bucket's objects (the naming rules the watchdog shares).

use crate::infra::s3::{list_backups, JobS3, Listing};

/// S3 could not list the backups: in words that name the bucket and never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("listing s3://{bucket}/{prefix}: {why}")]
pub struct ListingError {
    pub bucket: String,
    pub prefix: String,
    /// What S3 said, redacted.
    pub why: String,
}

/// Every backup under the job's prefix (one request per 1000 keys), or why not: `Err` when
/// nothing could be read, a listing with [`Listing::cut`] when only part could.
pub async fn list_every_backup(job: &JobS3) -> Result<Listing, ListingError> {
    list_backups(&job.client, &job.bucket, &job.prefix)
        .await
        .map_err(|e| ListingError {
            bucket: job.bucket.clone(),
            prefix: job.prefix.clone(),
            why: job.redact(&crate::infra::aws::explain("S3", &e).words),
        })
}

/// Whether `key` is a backup of `database`, by its file name as the runbook's jobs write them:
/// the stem (extensions such as `.sql.enc` removed) is the database or ends in `-database` /
/// `_database` (`postgres-backup-20261130_020000_link_users.sql.enc`,
/// `manual-backup-20261125_010203-link_ai.sql.enc`). Directories never count: with the prefix
/// `postgres/`, `postgres/postgres-backup-x_app.sql.enc` is `app`'s, not `postgres`'s.
pub fn key_matches(key: &str, database: &str) -> bool {
    let file = key.rsplit('/').next().unwrap_or_default();
    let mut stem = file;
    for ext in [".enc", ".gz", ".sql", ".dump", ".backup", ".pgdump"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    stem == database
        || stem
            .strip_suffix(database)
            .is_some_and(|rest| rest.ends_with(['-', '_']))
}

/// The database a backup `key` belongs to: the longest configured name it matches.
pub fn database_of<'a>(key: &str, databases: &'a [String]) -> Option<&'a str> {
    databases
        .iter()
        .filter(|d| key_matches(key, d))
        .max_by_key(|d| d.len())
        .map(String::as_str)
}
