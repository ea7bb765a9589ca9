//! How a value is written to and read from each backend: the one place that says that a time is a
//! `timestamptz` on PostgreSQL and fixed-width RFC 3339 text on SQLite, and that a JSON value is
//! `jsonb` on PostgreSQL and text on SQLite. Numbers, text and booleans are the same on both.
//!
//! SQLite times are stored with microseconds and a `Z`, so that comparing text compares times and
//! the `(fingerprint, starts_at)` constraint sees equal times as equal.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::postgres::{PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{ColumnIndex, Encode, Row, Type};

use super::{classify, corrupt, StoreError};

/// A value bound to a query: what it becomes on each backend.
pub(crate) trait Param<'q> {
    /// The PostgreSQL form.
    type Pg: 'q + Encode<'q, Postgres> + Type<Postgres>;
    /// The SQLite form.
    type Lite: 'q + Encode<'q, Sqlite> + Type<Sqlite>;
    fn pg(self) -> Self::Pg;
    /// Fails only for a value that cannot be written as text (JSON serialisation).
    fn lite(self) -> Result<Self::Lite, StoreError>;
}

/// A value read from a row's column, on either backend.
pub(crate) trait Column: Sized {
    fn pg<I: Index>(row: &PgRow, col: I) -> Result<Self, StoreError>;
    fn lite<I: Index>(row: &SqliteRow, col: I) -> Result<Self, StoreError>;
}

/// A column named or numbered, on both backends' rows.
pub(crate) trait Index: ColumnIndex<PgRow> + ColumnIndex<SqliteRow> + Copy {}
impl Index for &str {}
impl Index for usize {}

/// Parameters both backends bind as they are.
macro_rules! bound_as_is {
    ($($t:ty),*) => {$(
        impl<'q> Param<'q> for $t {
            type Pg = Self;
            type Lite = Self;
            fn pg(self) -> Self {
                self
            }
            fn lite(self) -> Result<Self, StoreError> {
                Ok(self)
            }
        }
    )*};
}

/// Types both backends write and read as they are (also bound by reference).
macro_rules! same_on_both {
    ($($t:ty),*) => {$(
        bound_as_is!($t, &'q $t);
        impl Column for $t {
            fn pg<I: Index>(row: &PgRow, col: I) -> Result<Self, StoreError> {
                row.try_get(col).map_err(classify)
            }
            fn lite<I: Index>(row: &SqliteRow, col: I) -> Result<Self, StoreError> {
                row.try_get(col).map_err(classify)
            }
        }
    )*};
}

same_on_both!(
    i32,
    i64,
    f64,
    bool,
    String,
    Option<i32>,
    Option<i64>,
    Option<f64>,
    Option<String>
);
bound_as_is!(&'q str, Option<&'q str>);

// ---- Time ----

/// SQLite's stored form of a time.
pub(crate) fn sqlite_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads SQLite's stored form of a time.
pub(crate) fn parse_sqlite_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time {s:?}: {e}")))
}

impl<'q> Param<'q> for DateTime<Utc> {
    type Pg = Self;
    type Lite = String;
    fn pg(self) -> Self {
        self
    }
    fn lite(self) -> Result<String, StoreError> {
        Ok(sqlite_time(self))
    }
}

impl<'q> Param<'q> for Option<DateTime<Utc>> {
    type Pg = Self;
    type Lite = Option<String>;
    fn pg(self) -> Self {
        self
    }
    fn lite(self) -> Result<Option<String>, StoreError> {
        Ok(self.map(sqlite_time))
    }
}

impl Column for DateTime<Utc> {
    fn pg<I: Index>(row: &PgRow, col: I) -> Result<Self, StoreError> {
        row.try_get(col).map_err(classify)
    }
    fn lite<I: Index>(row: &SqliteRow, col: I) -> Result<Self, StoreError> {
        parse_sqlite_time(row.try_get(col).map_err(classify)?)
    }
}

impl Column for Option<DateTime<Utc>> {
    fn pg<I: Index>(row: &PgRow, col: I) -> Result<Self, StoreError> {
        row.try_get(col).map_err(classify)
    }
    fn lite<I: Index>(row: &SqliteRow, col: I) -> Result<Self, StoreError> {
        row.try_get::<Option<&str>, _>(col)
            .map_err(classify)?
            .map(parse_sqlite_time)
            .transpose()
    }
}

// ---- JSON ----

/// A JSON parameter: `jsonb` on PostgreSQL, its compact text on SQLite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Json<'a, T: ?Sized>(pub &'a T);

impl<'q, T: Serialize + ?Sized> Param<'q> for Json<'q, T> {
    type Pg = sqlx::types::Json<&'q T>;
    type Lite = String;
    fn pg(self) -> Self::Pg {
        sqlx::types::Json(self.0)
    }
    fn lite(self) -> Result<String, StoreError> {
        serde_json::to_string(self.0).map_err(|e| corrupt("JSON value", e))
    }
}

impl<'q, T: Serialize + ?Sized> Param<'q> for Option<Json<'q, T>> {
    type Pg = Option<sqlx::types::Json<&'q T>>;
    type Lite = Option<String>;
    fn pg(self) -> Self::Pg {
        self.map(Param::pg)
    }
    fn lite(self) -> Result<Option<String>, StoreError> {
        self.map(Param::lite).transpose()
    }
}

impl Column for serde_json::Value {
    fn pg<I: Index>(row: &PgRow, col: I) -> Result<Self, StoreError> {
        row.try_get::<sqlx::types::Json<serde_json::Value>, _>(col)
            .map(|j| j.0)
            .map_err(classify)
    }
    fn lite<I: Index>(row: &SqliteRow, col: I) -> Result<Self, StoreError> {
        let text: &str = row.try_get(col).map_err(classify)?;
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("JSON column: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_sort_as_text_in_time_order() {
        let a = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.9Z")
            .unwrap()
            .with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2026-01-01T00:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(
            sqlite_time(a) < sqlite_time(b),
            "{} < {}",
            sqlite_time(a),
            sqlite_time(b)
        );
        assert_eq!(parse_sqlite_time(&sqlite_time(a)).unwrap(), a);
    }
}
