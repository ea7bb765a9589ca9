//! The runbook's procedures beyond the alert: the restore test (download, decrypt, pg_restore
//! into a scratch database, check, drop; for a pgBackRest target, `pgbackrest restore` into a
//! scratch server) and the manual backup Job, for every target.

pub mod fleet;
pub mod manual_backup;
pub mod pgbackrest_restore;
pub mod restore;
