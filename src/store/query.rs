//! One way to run a statement on either backend, so that the aggregates' SQL is written once:
//! [`Conn`] (the writer or the readers) and [`Tx`] (a transaction on the writer) start a
//! [`Stmt`], whose parameters go through the codecs of [`super::codec`], and whose rows are
//! [`Row`]s read through them. [`Dialect`] holds the few fragments whose SQL differs (the
//! database's clock, the gate's serialising statement).
//!
//! Each call is one `match` on the backend: no boxing, no allocation beyond sqlx's own.

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::Transaction;

use super::codec::{Column, Index, Param};
use super::{classify, StoreError};

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;
type LiteQuery<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// The SQL fragments that differ between the backends. Times are the database's own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The database's now (on SQLite in the stored fixed-width form).
    pub(crate) fn now(self) -> &'static str {
        match self {
            Dialect::Postgres => "now()",
            Dialect::Sqlite => "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')",
        }
    }

    /// The database's now plus or minus (`sign`) the number of seconds bound to `$param`.
    pub(crate) fn shift(self, param: usize, sign: char) -> String {
        match self {
            Dialect::Postgres => format!("(now() {sign} make_interval(secs => ${param}))"),
            Dialect::Sqlite => format!(
                "(strftime('%Y-%m-%dT%H:%M:%f', 'now', '{sign}' || ${param} || ' seconds') || '000Z')"
            ),
        }
    }

    /// The statement that makes gate transactions run one at a time (so that two replicas never
    /// both see room in the same budget).
    pub(crate) fn gate_serialize(self) -> &'static str {
        match self {
            // The mode conflicts with itself, not with reads.
            Dialect::Postgres => "LOCK TABLE action_starts IN SHARE ROW EXCLUSIVE MODE",
            // A write as the first statement takes SQLite's write lock at once: gate transactions
            // run one at a time instead of failing to upgrade a read lock.
            Dialect::Sqlite => "DELETE FROM action_starts WHERE id < 0",
        }
    }
}

/// The time a change is stamped with where the backends' clocks differ: PostgreSQL's transaction
/// clock, or on SQLite this process's clock, bound as a parameter (SQLite's `'now'` has only
/// milliseconds; stored times have microseconds).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stamp {
    Database,
    Bound(DateTime<Utc>),
}

impl Stamp {
    pub(crate) fn of(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Postgres => Stamp::Database,
            Dialect::Sqlite => Stamp::Bound(Utc::now()),
        }
    }

    /// The SQL for this time; `param` is the number its parameter takes when it is bound (it
    /// must be the statement's last).
    pub(crate) fn sql(self, param: usize) -> String {
        match self {
            Stamp::Database => "now()".to_owned(),
            Stamp::Bound(_) => format!("${param}"),
        }
    }
}

/// A pool to run single statements on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Conn<'c> {
    Pg(&'c PgPool),
    Lite(&'c SqlitePool),
}

impl<'c> Conn<'c> {
    pub(crate) fn query<'q>(self, sql: &'q str) -> Stmt<'c, 'q> {
        Stmt::new(match self {
            Conn::Pg(p) => Run::Pg(PgExec::Pool(p), sqlx::query(sql)),
            Conn::Lite(p) => Run::Lite(LiteExec::Pool(p), sqlx::query(sql)),
        })
    }
}

/// A transaction (on SQLite, `IMMEDIATE` on the writer). Dropped without [`Tx::commit`], it rolls
/// back.
#[derive(Debug)]
pub(crate) enum Tx {
    Pg(Transaction<'static, Postgres>),
    Lite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub(crate) fn query<'c, 'q>(&'c mut self, sql: &'q str) -> Stmt<'c, 'q> {
        Stmt::new(match self {
            Tx::Pg(tx) => Run::Pg(PgExec::Conn(tx), sqlx::query(sql)),
            Tx::Lite(tx) => Run::Lite(LiteExec::Conn(tx), sqlx::query(sql)),
        })
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Tx::Pg(_) => Dialect::Postgres,
            Tx::Lite(_) => Dialect::Sqlite,
        }
    }

    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Pg(tx) => tx.commit().await,
            Tx::Lite(tx) => tx.commit().await,
        }
        .map_err(classify)
    }
}

enum PgExec<'c> {
    Pool(&'c PgPool),
    Conn(&'c mut PgConnection),
}

enum LiteExec<'c> {
    Pool(&'c SqlitePool),
    Conn(&'c mut SqliteConnection),
}

enum Run<'c, 'q> {
    Pg(PgExec<'c>, PgQuery<'q>),
    Lite(LiteExec<'c>, LiteQuery<'q>),
}

/// A statement with its parameters, bound to where it runs.
#[must_use = "a statement does nothing until it is run"]
pub(crate) struct Stmt<'c, 'q> {
    run: Run<'c, 'q>,
    /// The first parameter that could not be encoded; the statement then fails with it.
    failed: Option<StoreError>,
}

/// Runs `$q.$method(executor)` on whichever executor the statement has.
macro_rules! on_executor {
    ($run:expr, $q:ident => $call:ident) => {
        match $run {
            Run::Pg(PgExec::Pool(e), $q) => $q.$call(e).await.map(Pg::wrap),
            Run::Pg(PgExec::Conn(e), $q) => $q.$call(e).await.map(Pg::wrap),
            Run::Lite(LiteExec::Pool(e), $q) => $q.$call(e).await.map(Lite::wrap),
            Run::Lite(LiteExec::Conn(e), $q) => $q.$call(e).await.map(Lite::wrap),
        }
        .map_err(classify)
    };
}

impl<'c, 'q> Stmt<'c, 'q> {
    fn new(run: Run<'c, 'q>) -> Self {
        Self { run, failed: None }
    }

    /// Binds the next parameter (`$1`, `$2`, … in order of first appearance).
    pub(crate) fn bind<P: Param<'q>>(mut self, value: P) -> Self {
        self.run = match self.run {
            Run::Pg(e, q) => Run::Pg(e, q.bind(value.pg())),
            Run::Lite(e, q) => match value.lite() {
                Ok(v) => Run::Lite(e, q.bind(v)),
                Err(err) => {
                    self.failed.get_or_insert(err);
                    Run::Lite(e, q)
                }
            },
        };
        self
    }

    /// Binds the time of `stamp` if it is a parameter (see [`Stamp::sql`]).
    pub(crate) fn bind_stamp(self, stamp: Stamp) -> Self {
        match stamp {
            Stamp::Database => self,
            Stamp::Bound(t) => self.bind(t),
        }
    }

    fn ready(self) -> Result<Run<'c, 'q>, StoreError> {
        match self.failed {
            Some(err) => Err(err),
            None => Ok(self.run),
        }
    }

    /// Runs the statement; the number of rows it changed.
    pub(crate) async fn execute(self) -> Result<u64, StoreError> {
        let done: Done = on_executor!(self.ready()?, q => execute)?;
        Ok(done.0)
    }

    pub(crate) async fn fetch_optional(self) -> Result<Option<Row>, StoreError> {
        let row: Option<Row> = on_executor!(self.ready()?, q => fetch_optional)?;
        Ok(row)
    }

    pub(crate) async fn fetch_one(self) -> Result<Row, StoreError> {
        on_executor!(self.ready()?, q => fetch_one)
    }

    pub(crate) async fn fetch_all(self) -> Result<Vec<Row>, StoreError> {
        on_executor!(self.ready()?, q => fetch_all)
    }

    /// The first column of the one row.
    pub(crate) async fn fetch_scalar<T: Column>(self) -> Result<T, StoreError> {
        self.fetch_one().await?.get(0)
    }

    /// The first column of the row, if there is one.
    pub(crate) async fn fetch_optional_scalar<T: Column>(self) -> Result<Option<T>, StoreError> {
        self.fetch_optional().await?.map(|r| r.get(0)).transpose()
    }

    /// The first column of every row.
    pub(crate) async fn fetch_all_scalar<T: Column>(self) -> Result<Vec<T>, StoreError> {
        self.fetch_all().await?.iter().map(|r| r.get(0)).collect()
    }
}

/// A row of either backend.
pub(crate) enum Row {
    Pg(PgRow),
    Lite(SqliteRow),
}

impl Row {
    /// The value of column `col` (a name or a position).
    pub(crate) fn get<T: Column>(&self, col: impl Index) -> Result<T, StoreError> {
        match self {
            Row::Pg(r) => T::pg(r, col),
            Row::Lite(r) => T::lite(r, col),
        }
    }
}

/// Rows changed by a statement.
struct Done(u64);

/// Turns what sqlx answers on one backend into this module's types.
trait Wrap<T> {
    type Out;
    fn wrap(v: T) -> Self::Out;
}

struct Pg;
struct Lite;

impl Wrap<sqlx::postgres::PgQueryResult> for Pg {
    type Out = Done;
    fn wrap(v: sqlx::postgres::PgQueryResult) -> Done {
        Done(v.rows_affected())
    }
}

impl Wrap<sqlx::sqlite::SqliteQueryResult> for Lite {
    type Out = Done;
    fn wrap(v: sqlx::sqlite::SqliteQueryResult) -> Done {
        Done(v.rows_affected())
    }
}

impl Wrap<PgRow> for Pg {
    type Out = Row;
    fn wrap(v: PgRow) -> Row {
        Row::Pg(v)
    }
}

impl Wrap<SqliteRow> for Lite {
    type Out = Row;
    fn wrap(v: SqliteRow) -> Row {
        Row::Lite(v)
    }
}

impl Wrap<Option<PgRow>> for Pg {
    type Out = Option<Row>;
    fn wrap(v: Option<PgRow>) -> Option<Row> {
        v.map(Row::Pg)
    }
}

impl Wrap<Option<SqliteRow>> for Lite {
    type Out = Option<Row>;
    fn wrap(v: Option<SqliteRow>) -> Option<Row> {
        v.map(Row::Lite)
    }
}

impl Wrap<Vec<PgRow>> for Pg {
    type Out = Vec<Row>;
    fn wrap(v: Vec<PgRow>) -> Vec<Row> {
        v.into_iter().map(Row::Pg).collect()
    }
}

impl Wrap<Vec<SqliteRow>> for Lite {
    type Out = Vec<Row>;
    fn wrap(v: Vec<SqliteRow>) -> Vec<Row> {
        v.into_iter().map(Row::Lite).collect()
    }
}
