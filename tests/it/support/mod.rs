//! What the integration tests share: the real application on a fresh store (`app`), stand-ins
//! for third parties (`moto`), the test cluster (`cluster`: a real Kubernetes API server), real
//! daemons and processes (`procs`, `service`,
//! `pg`), fixtures (`approvals`, `incident`, `backup`) and the end-to-end `world`.

pub mod app;
pub mod approvals;
pub mod archiving;
pub mod backup;
pub mod cluster;
pub mod incident;
pub mod moto;
pub mod pg;
pub mod procs;
pub mod s3_proxy;
pub mod service;
pub mod world;

/// Generates, for each `async fn name(Backend)` named, the tests `name::postgres` and
/// `name::sqlite`: the same test on a fresh PostgreSQL database and on a fresh SQLite file.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::support::app::Backend;
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

/// The service's default port (127.0.0.1:9095, where the README's command listens): a test that
/// starts the binary without `--listen` holds this while it runs. Separate test binaries kept
/// such tests apart; in one process they take this lock (every other test listens on port 0 or
/// on a free ephemeral port, never on 9095).
pub static DEFAULT_PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
