//! Integration tests: the real application over HTTP, on real PostgreSQL and SQLite stores.

/// Runs an `async fn(Backend)` test once on PostgreSQL and once on SQLite.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::helpers::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
        }
    )*};
}

mod alertmanager;
#[path = "../support/approvals.rs"]
mod approvals;
mod auth;
mod backups;
mod connections;
mod diagnosis;
mod fuzz;
mod health;
mod helpers;
mod incidents;
mod ingest;
#[path = "../support/kube_server.rs"]
mod kube_server;
#[path = "../support/moto.rs"]
mod moto;
mod openapi;
#[path = "../support/pg.rs"]
mod pg;
#[path = "../support/procs.rs"]
mod procs;
mod slack;
mod webhook;
