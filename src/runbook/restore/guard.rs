//! What a restore test checks before it starts: the scratch server's role is not a superuser
//! (unless `restore_test.allow_superuser`), and a requested object exists. A test that could not
//! start answers the caller at once and never becomes a failed test or a page.

use sqlx::{ConnectOptions, Connection};

use super::{PgTarget, ScratchError};
use crate::infra::s3::JobS3;

/// The `rolsuper` of the role `target` connects as.
pub async fn is_superuser(target: &PgTarget) -> Result<bool, ScratchError> {
    let connect = |source| ScratchError::Connect {
        host: target.host.clone(),
        port: target.port,
        source,
    };
    let mut conn = target
        .options(&target.maintenance_db)
        .connect()
        .await
        .map_err(connect)?;
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .map_err(connect)?;
    let _ = conn.close().await;
    Ok(superuser)
}

/// Whether `key` exists in the backup bucket: `Some(false)` only when S3 says it does not;
/// `None` when S3 could not tell (the test then runs and reports what it meets).
pub async fn object_exists(job: &JobS3, key: &str) -> Option<bool> {
    match job
        .client
        .head_object()
        .bucket(&job.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(_) => Some(true),
        Err(e) => {
            let f = crate::infra::aws::explain("S3", &e);
            let missing = matches!(f.kind, crate::infra::aws::FailureKind::NotFound)
                || f.code == "NoSuchKey"
                || e.raw_response().map(|r| r.status().as_u16()) == Some(404);
            missing.then_some(false)
        }
    }
}
