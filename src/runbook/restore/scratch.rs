//! The scratch PostgreSQL the restore test restores into: its connection, and a database that
//! is dropped whatever happens.

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::process::Command;

/// The server scratch databases are made on, from `restore_test.target_url`.
#[derive(Clone)]
pub struct PgTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub(super) password: Option<SecretString>,
    /// The database to connect to for CREATE / DROP DATABASE.
    pub maintenance_db: String,
    pub sslmode: Option<String>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("maintenance_db", &self.maintenance_db)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses `postgres://user:password@host:port/db?sslmode=…`. The error never shows the URL.
    pub fn parse(url: &SecretString) -> Result<Self, String> {
        let u = reqwest::Url::parse(url.expose_secret())
            .map_err(|e| format!("restore_test.target_url is not a URL: {e}"))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err("restore_test.target_url must start with postgres://".to_owned());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let db = decode(u.path().trim_start_matches('/'));
        Ok(Self {
            host: u.host_str().unwrap_or("localhost").to_owned(),
            port: u.port().unwrap_or(5432),
            user: if u.username().is_empty() {
                "postgres".to_owned()
            } else {
                decode(u.username())
            },
            password: u.password().map(|p| SecretString::from(decode(p))),
            maintenance_db: if db.is_empty() {
                "postgres".to_owned()
            } else {
                db
            },
            sslmode: u
                .query_pairs()
                .find(|(k, _)| k == "sslmode")
                .map(|(_, v)| v.into_owned()),
        })
    }

    /// Connection options for database `db` on this server.
    pub fn options(&self, db: &str) -> PgConnectOptions {
        let mut o = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.user)
            .database(db)
            .application_name("backup-remediator-restore-test")
            .log_statements(tracing::log::LevelFilter::Debug);
        if let Some(p) = &self.password {
            o = o.password(p.expose_secret());
        }
        if let Some(mode) = self
            .sslmode
            .as_deref()
            .and_then(|m| m.parse::<PgSslMode>().ok())
        {
            o = o.ssl_mode(mode);
        }
        o
    }

    /// The libpq environment for a `pg_restore` into `db` (the password never on a command line).
    pub(super) fn apply_env(&self, cmd: &mut Command, db: &str) {
        for var in ["PGSERVICE", "PGSERVICEFILE", "PGPASSFILE", "PGOPTIONS"] {
            cmd.env_remove(var);
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", db)
            .env("PGAPPNAME", "backup-remediator-restore-test")
            .env("PGCONNECT_TIMEOUT", "15");
        match &self.password {
            Some(p) => cmd.env("PGPASSWORD", p.expose_secret()),
            None => cmd.env_remove("PGPASSWORD"),
        };
        if let Some(mode) = &self.sslmode {
            cmd.env("PGSSLMODE", mode);
        }
    }
}

/// A PostgreSQL identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A scratch database name: `<prefix>_<database, reduced to [a-z0-9_]>_<8 hex>`, at most 63 bytes.
pub fn scratch_name(prefix: &str, database: &str) -> String {
    let mut db: String = database
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        })
        .collect();
    db.truncate(63 - prefix.len() - 10);
    format!("{prefix}_{db}_{:08x}", rand::random::<u32>())
}

/// A database created for one test. [`ScratchDb::drop_now`] drops it; if that is never reached
/// (a panic, a cancelled task), `Drop` drops it on a thread of its own.
pub struct ScratchDb {
    target: PgTarget,
    pub name: String,
    dropped: bool,
}

impl ScratchDb {
    /// Creates the database `name` on `target`.
    pub async fn create(target: &PgTarget, name: &str) -> Result<Self, String> {
        let mut conn = target
            .options(&target.maintenance_db)
            .connect()
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to the restore-test PostgreSQL at {}:{}: {e}",
                    target.host, target.port
                )
            })?;
        conn.execute(format!("CREATE DATABASE {}", quote_ident(name)).as_str())
            .await
            .map_err(|e| format!("creating the scratch database {name}: {e}"))?;
        let _ = conn.close().await;
        Ok(Self {
            target: target.clone(),
            name: name.to_owned(),
            dropped: false,
        })
    }

    /// Drops the database (terminating any session still in it).
    pub async fn drop_now(mut self) -> Result<(), String> {
        self.dropped = true;
        drop_database(&self.target, &self.name).await
    }
}

/// `DROP DATABASE IF EXISTS … WITH (FORCE)` on `target`.
pub async fn drop_database(target: &PgTarget, name: &str) -> Result<(), String> {
    let mut conn = target
        .options(&target.maintenance_db)
        .connect()
        .await
        .map_err(|e| format!("connecting to drop the scratch database {name}: {e}"))?;
    let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
    let result = conn.execute(sql.as_str()).await;
    let _ = conn.close().await;
    result
        .map(|_| ())
        .map_err(|e| format!("dropping the scratch database {name}: {e}"))
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (target, name) = (self.target.clone(), self.name.clone());
        tracing::warn!(scratch = %name, "the restore test stopped early; dropping its scratch database");
        // Drop may run on a runtime thread, or during a panic: use a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_database(&target, &name))
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "scratch database left behind"),
            Err(_) => tracing::error!("dropping the scratch database panicked"),
        }
    }
}
