//! Whose fault a store error is: the store's condition (read-only after a failover, full, I/O,
//! busy, a serialization conflict, a cancelled statement, a lost connection), or the request's.
//!
//! Why it matters: the webhook answers Alertmanager with 2xx only when an alert itself was
//! refused; Alertmanager does not retry a 2xx, so a store condition answered as a refusal loses
//! the alert until its repeat interval. Every store condition answers 503 instead, and the
//! delivery can be retried safely: each write is one transaction (nothing half-written) and a
//! retry joins what was stored. Classified by SQLSTATE class (PostgreSQL) and by SQLite's result
//! code, of which sqlx reports the *extended* code (the primary code is its low byte). The
//! book's API page (`docs/src/api.md`) holds the same table.

use utoipa::ToSchema;

crate::domain::names::string_enum!(
    /// Why the store cannot take a request now (the 503's `reason`).
    #[derive(ToSchema)]
    pub StoreCondition "store condition" {
        /// No connection: refused, lost, timed out in the pool, the database or file is gone,
        /// or the store refused our own credentials.
        Unreachable => "unreachable",
        /// The store takes no writes (`default_transaction_read_only`, a standby behind a
        /// pooler after a failover, a read-only file).
        ReadOnly => "read_only",
        /// The disk (or the SQLite file's size limit) is full.
        Full => "full",
        /// Out of memory, connections or another resource.
        Resources => "resources",
        /// The store reported an I/O or system error.
        Io => "io",
        /// Locked by another writer beyond the wait.
        Busy => "busy",
        /// The transaction lost a serialization conflict or a deadlock and was rolled back.
        Conflict => "conflict",
        /// The statement was cancelled (statement timeout, an operator).
        Cancelled => "cancelled",
        /// The server is shutting down, starting up or in recovery.
        Stopping => "stopping",
    }
);

impl StoreCondition {
    /// What the 503 says, in a sentence.
    pub fn sentence(self) -> &'static str {
        match self {
            Self::Unreachable => "the incident store is unavailable (no connection); retry later",
            Self::ReadOnly => "the incident store is read-only now; retry later",
            Self::Full => "the incident store is full; retry later",
            Self::Resources => "the incident store is out of resources; retry later",
            Self::Io => "the incident store reported an I/O error; retry later",
            Self::Busy => "the incident store is busy; retry later",
            Self::Conflict => {
                "the incident store rolled the write back (serialization conflict); retry"
            }
            Self::Cancelled => "the incident store cancelled the statement; retry later",
            Self::Stopping => "the incident store is shutting down or starting up; retry later",
        }
    }
}

/// The store condition behind `err`, or `None` when the request itself was refused (a value the
/// store cannot hold, a constraint, a trigger that raised).
pub(crate) fn condition(err: &sqlx::Error) -> Option<StoreCondition> {
    use sqlx::Error as E;
    match err {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => {
            Some(StoreCondition::Unreachable)
        }
        E::Protocol(_) => Some(StoreCondition::Unreachable),
        E::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // sqlx gives SQLite's extended result code, as a number.
                sqlite_condition(db.code()?.parse().ok()?)
            } else {
                sqlstate_condition(db.code().as_deref()?)
            }
        }
        _ => None,
    }
}

/// PostgreSQL: by SQLSTATE class (the first two characters), plus the few codes of a class
/// that is otherwise the request's.
pub(crate) fn sqlstate_condition(code: &str) -> Option<StoreCondition> {
    use StoreCondition as C;
    let class = code.get(..2)?;
    Some(match (class, code) {
        // connection_exception
        ("08", _) => C::Unreachable,
        // invalid_authorization_specification: our own credentials, not the alert
        ("28", _) => C::Unreachable,
        // invalid_catalog_name: the store's database is gone
        (_, "3D000") => C::Unreachable,
        // invalid_transaction_state: 25006 read_only_sql_transaction and its kin
        ("25", _) => C::ReadOnly,
        // transaction_rollback: 40001 serialization_failure, 40P01 deadlock_detected
        ("40", _) => C::Conflict,
        // insufficient_resources: 53100 disk_full; 53200 out of memory, 53300 too many
        // connections
        (_, "53100") => C::Full,
        ("53", _) => C::Resources,
        // lock_not_available (lock_timeout)
        (_, "55P03") => C::Busy,
        // operator_intervention: 57014 query_canceled; 57P01-57P05 shutdown, starting up
        (_, "57014") => C::Cancelled,
        ("57", _) => C::Stopping,
        // system_error (58030 io_error…) and internal_error (XX001 data_corrupted…)
        ("58", _) | ("XX", _) => C::Io,
        _ => return None,
    })
}

/// SQLite: by the primary result code, the low byte of the extended code sqlx reports
/// (SQLITE_IOERR_WRITE is 778, SQLITE_READONLY_DBMOVED 1032, SQLITE_BUSY_SNAPSHOT 517…).
pub(crate) fn sqlite_condition(extended: i32) -> Option<StoreCondition> {
    use StoreCondition as C;
    Some(match extended & 0xff {
        5 | 6 => C::Busy,          // SQLITE_BUSY, SQLITE_LOCKED
        7 => C::Resources,         // SQLITE_NOMEM
        8 => C::ReadOnly,          // SQLITE_READONLY
        9 => C::Cancelled,         // SQLITE_INTERRUPT
        10 | 11 | 26 => C::Io,     // SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_NOTADB
        13 => C::Full,             // SQLITE_FULL
        14 | 15 => C::Unreachable, // SQLITE_CANTOPEN, SQLITE_PROTOCOL
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use StoreCondition as C;

    #[test]
    fn sqlstates_of_the_stores_condition_are_unavailable_by_class() {
        let table = [
            ("08006", Some(C::Unreachable)),
            ("08001", Some(C::Unreachable)),
            ("28P01", Some(C::Unreachable)),
            ("3D000", Some(C::Unreachable)),
            ("25006", Some(C::ReadOnly)),
            ("25P02", Some(C::ReadOnly)),
            ("40001", Some(C::Conflict)),
            ("40P01", Some(C::Conflict)),
            ("53100", Some(C::Full)),
            ("53200", Some(C::Resources)),
            ("53300", Some(C::Resources)),
            ("55P03", Some(C::Busy)),
            ("57014", Some(C::Cancelled)),
            ("57P01", Some(C::Stopping)),
            ("57P03", Some(C::Stopping)),
            ("58030", Some(C::Io)),
            ("XX001", Some(C::Io)),
        ];
        for (code, want) in table {
            assert_eq!(sqlstate_condition(code), want, "{code}");
        }
    }

    #[test]
    fn sqlstates_that_refuse_the_request_itself_are_not_the_stores_condition() {
        // data exception, integrity, a trigger's RAISE, program limit, syntax (our bug, but a
        // retry does not help either)
        for code in [
            "22021", "22001", "23505", "23503", "P0001", "54000", "42601", "55006",
        ] {
            assert_eq!(sqlstate_condition(code), None, "{code}");
        }
    }

    #[test]
    fn sqlite_codes_are_read_by_their_primary_code_the_low_byte_of_the_extended_one() {
        let table = [
            (5, Some(C::Busy)),
            (517, Some(C::Busy)), // SQLITE_BUSY_SNAPSHOT
            (6, Some(C::Busy)),
            (262, Some(C::Busy)), // SQLITE_LOCKED_SHAREDCACHE
            (7, Some(C::Resources)),
            (8, Some(C::ReadOnly)),
            (1032, Some(C::ReadOnly)), // SQLITE_READONLY_DBMOVED
            (9, Some(C::Cancelled)),
            (10, Some(C::Io)),
            (778, Some(C::Io)),  // SQLITE_IOERR_WRITE
            (3338, Some(C::Io)), // SQLITE_IOERR_FSYNC
            (13, Some(C::Full)),
            (14, Some(C::Unreachable)),
            (1038, Some(C::Unreachable)), // SQLITE_CANTOPEN_CONVPATH
        ];
        for (code, want) in table {
            assert_eq!(sqlite_condition(code), want, "{code}");
        }
        // SQLITE_ERROR, SQLITE_CONSTRAINT_UNIQUE (2067), _TRIGGER (1811), SQLITE_TOOBIG,
        // SQLITE_MISMATCH: the request's.
        for code in [1, 2067, 1811, 19, 18, 20] {
            assert_eq!(sqlite_condition(code), None, "{code}");
        }
    }

    #[test]
    fn connection_level_errors_are_unreachable() {
        assert_eq!(condition(&sqlx::Error::PoolTimedOut), Some(C::Unreachable));
        assert_eq!(condition(&sqlx::Error::RowNotFound), None);
    }

    /// A real full SQLite store: the writer connection (the only one that writes) is capped at
    /// a few pages more than the file has (`PRAGMA max_page_count`), then alerts with large
    /// annotations are opened until SQLite answers SQLITE_FULL.
    #[tokio::test]
    async fn a_full_sqlite_store_is_the_stores_condition_and_nothing_is_half_written() {
        use crate::domain::incident::NewIncident;
        use crate::store::{IncidentFilter, Store, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            max_connections: 2,
            acquire_timeout: std::time::Duration::from_secs(5),
        };
        let store = Store::connect("", &dir.path().join("s.sqlite"), &opts)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let pages: i64 = store
            .writer()
            .query("PRAGMA page_count")
            .fetch_scalar()
            .await
            .unwrap();
        store
            .writer()
            .query(&format!("PRAGMA max_page_count = {}", pages + 4))
            .execute()
            .await
            .unwrap();
        let big = serde_json::json!({ "description": "x".repeat(6000) });
        let new = |i: usize| NewIncident {
            fingerprint: format!("{i:016x}"),
            alertname: "PostgreSQLBackupFailed".into(),
            starts_at: chrono::Utc::now(),
            severity: "critical".into(),
            labels: serde_json::json!({}),
            annotations: big.clone(),
            generator_url: String::new(),
            opened_at: chrono::Utc::now(),
            detail: serde_json::json!({}),
            target: Some("link-services".into()),
        };

        let mut opened = 0;
        let err = loop {
            match store.open_incident(&new(opened)).await {
                Ok(_) => opened += 1,
                Err(e) => break e,
            }
            assert!(opened < 100, "the capped file never filled");
        };

        assert_eq!(err.condition(), Some(C::Full), "{err}");
        let filter = IncidentFilter {
            status: None,
            since: None,
            until: None,
            before_id: None,
            target: None,
            alertname: None,
            limit: 500,
        };
        let stored = store.list_incidents(&filter).await.unwrap();
        assert_eq!(stored.len(), opened, "the refused alert left no row behind");
        for i in &stored {
            assert_eq!(
                store.timeline(i.id).await.unwrap().len(),
                1,
                "each stored incident has its one opened event"
            );
        }
    }
}
