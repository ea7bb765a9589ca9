//! The runbook's restore test ("Test Backup Restoration", "weekly restore tests"): the newest
//! backup of each configured database is downloaded from S3 as a stream, decrypted in process by
//! [`crate::infra::crypto::Decryptor`] (the one implementation of the openssl format), piped into the
//! real `pg_restore` restoring into a scratch database created for the test, checked against
//! what the archive's table of contents (`pg_restore --list`) announces, and the scratch database
//! is dropped — always: on success, failure, timeout and panic ([`ScratchDb`]).
//!
//! A test ends `passed`, `failed` (the backup is not restorable: no backup, corrupt, wrong key,
//! truncated, pg_restore failed, tables missing) or `error` (the test itself could not run:
//! scratch server, S3 or the Secret unreachable, download interrupted). A failed test opens an
//! incident of its own kind, [`NOT_RESTORABLE_ALERT`]. Memory stays flat whatever the backup's
//! size: one read buffer, the decryptor's few blocks, and pipes with back-pressure.

use crate::domain::restore_test::{
    NewRestoreTest, Problem, RestoreTest, TestResult, TestStatus, NOT_RESTORABLE_ALERT,
};

/// Bytes read from the download at a time.
const READ_BUFFER: usize = 256 * 1024;
/// pg_restore's stderr kept for the reason (its last bytes).
const STDERR_KEEP: usize = 16 * 1024;
/// Largest `pg_restore --list` output read (a TOC of a few hundred thousand entries).
const TOC_LIMIT: usize = 64 * 1024 * 1024;

mod checks;
mod drift;
mod guard;
mod incidents;
mod objects;
mod pipeline;
mod scratch;
mod service;
mod toc;
pub use checks::{checks_for, run_checks};
pub use objects::{database_of, key_matches, list_every_backup, ListingError};
pub use pipeline::{check_restored, restore_stream, Checked, PipelineReport, RestoreInto};
pub use scratch::{drop_database, quote_ident, scratch_name, PgTarget, ScratchDb, ScratchError};
pub use service::{incident_fingerprint, RestoreTester, StartError, TestRequest};
pub use toc::{parse_toc, TableRef, Toc};

#[cfg(test)]
mod tests;
