//! Finding a database's backups among the bucket's objects (the naming rules the watchdog shares).

use chrono::DateTime;

use crate::infra::s3::{list_backups_since, JobS3, Listing};

/// Every backup under the job's prefix (one request per 1000 keys), or why not in words that name
/// the bucket and never a credential.
pub async fn list_every_backup(job: &JobS3) -> Result<Listing, String> {
    list_backups_since(
        &job.client,
        &job.bucket,
        &job.prefix,
        Some(DateTime::UNIX_EPOCH),
    )
    .await
    .map_err(|e| {
        format!(
            "listing s3://{}/{}: {}",
            job.bucket,
            job.prefix,
            job.redact(&crate::infra::aws::explain("S3", &e).words)
        )
    })
}

/// Whether `key` is a backup of `database`: a path segment equal to it, or a file name whose stem
/// (extensions such as `.sql.enc` removed) ends in `-database` / `_database` / `.database`.
pub fn key_matches(key: &str, database: &str) -> bool {
    let mut segments: Vec<&str> = key.split('/').collect();
    let file = segments.pop().unwrap_or_default();
    if segments.contains(&database) {
        return true;
    }
    let mut stem = file;
    for ext in [".enc", ".gz", ".sql", ".dump", ".backup", ".pgdump"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    stem == database
        || stem
            .strip_suffix(database)
            .is_some_and(|rest| rest.ends_with(['-', '_', '.']))
}

/// The database a backup `key` belongs to: the longest configured name it matches.
pub fn database_of<'a>(key: &str, databases: &'a [String]) -> Option<&'a str> {
    databases
        .iter()
        .filter(|d| key_matches(key, d))
        .max_by_key(|d| d.len())
        .map(String::as_str)
}
