//! The local PostgreSQL for tests: the admin connection, and a scratch backup role with
//! databases of one test's own, dropped (with FORCE) when the value is dropped.

use sqlx::{Connection, Executor, PgConnection};

/// `TEST_DATABASE_URL`, else the local trust-auth server.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// An admin connection to `db`, failing with what to start when the server is down.
pub async fn admin_on(db: &str) -> PgConnection {
    let url = admin_url();
    let base = url
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL ends in /DATABASE")
        .0;
    PgConnection::connect(&format!("{base}/{db}"))
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is not reachable ({e}): run scripts/test.sh")
        })
}

/// The backup Secret as the probes read it: `user` and `password`, and every other key the job
/// needs (with values no probe of the database uses).
pub fn backup_secret(user: &str, password: &str) -> backup_remediator::probes::BackupSecret {
    let data: std::collections::BTreeMap<String, k8s_openapi::ByteString> = [
        ("postgres-user", user),
        ("postgres-password", password),
        ("s3-bucket", "link-backups"),
        ("encryption-key", "k"),
        ("aws-access-key-id", "a"),
        ("aws-secret-access-key", "s"),
    ]
    .iter()
    .map(|(k, v)| {
        (
            (*k).to_owned(),
            k8s_openapi::ByteString(v.as_bytes().to_vec()),
        )
    })
    .collect();
    backup_remediator::probes::BackupSecret::from_data(&data)
}

/// A login role and databases for one test.
pub struct Scratch {
    pub role: String,
    pub password: String,
    pub dbs: Vec<String>,
}

impl Scratch {
    /// Creates role `backup_<id>` (LOGIN, a password) and one database per name in `dbs`
    /// (suffixed with `_<id>`).
    pub async fn create(dbs: &[&str]) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let s = Scratch {
            role: format!("backup_{id}"),
            password: format!("canary-pw-{}", &id[..8]),
            dbs: dbs.iter().map(|d| format!("{d}_{id}")).collect(),
        };
        let mut admin = admin_on("postgres").await;
        admin
            .execute(format!("CREATE ROLE {} LOGIN PASSWORD '{}'", s.role, s.password).as_str())
            .await
            .unwrap();
        for db in &s.dbs {
            admin
                .execute(format!("CREATE DATABASE {db}").as_str())
                .await
                .unwrap();
        }
        s
    }

    /// Runs `sql` as the admin in `db`.
    pub async fn sql(&self, db: &str, sql: &str) {
        admin_on(db).await.execute(sql).await.unwrap();
    }
}

/// Runs `f` to the end on a runtime of its own, in a thread of its own: for `Drop`, which runs
/// inside a test's runtime.
pub fn on_own_runtime<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f());
    })
    .join();
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (role, dbs) = (self.role.clone(), self.dbs.clone());
        // Drop runs inside the test's runtime: clean up on a runtime of its own.
        on_own_runtime(move || async move {
            let mut c = admin_on("postgres").await;
            for db in dbs {
                let _ = c
                    .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
                    .await;
            }
            let _ = c
                .execute(format!("DROP ROLE IF EXISTS {role}").as_str())
                .await;
        });
    }
}

/// A private PostgreSQL server that asks for passwords (scram-sha-256 over TCP), for the one
/// thing the shared trust-auth server cannot show: a refused password. It runs as the
/// `postgres` OS user (initdb refuses root) on a free loopback port, and is stopped on drop.
pub struct PasswordServer {
    pub port: u16,
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl PasswordServer {
    pub fn start(superuser_password: &str) -> Self {
        Self::start_with(superuser_password, false)
    }

    /// A server that stays in recovery and lets nobody in: a standby (`standby.signal`) with no
    /// primary to follow and `hot_standby = off`, so every login is answered 57P03 ("the
    /// database system is not accepting connections") — up, answering, and not ready.
    pub fn start_in_recovery() -> Self {
        Self::start_with("recovery-canary-pw", true)
    }

    fn start_with(superuser_password: &str, in_recovery: bool) -> Self {
        use std::os::unix::fs::chown;
        use std::process::Command;
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test.sh installs them)")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .expect("a PostgreSQL version directory");
        let bin = std::path::PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let pg = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .expect("id");
        let uid: u32 = String::from_utf8_lossy(&pg.stdout)
            .trim()
            .parse()
            .expect("a postgres OS user");
        let dir = tempfile::tempdir().unwrap();
        chown(dir.path(), Some(uid), None)
            .expect("this test runs as root, to run PostgreSQL as the postgres user");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, superuser_password).unwrap();
        chown(&pwfile, Some(uid), None).unwrap();
        let as_postgres = |program: &str| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        };
        let data = dir.path().join("data");
        let out = as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if in_recovery {
            let signal = data.join("standby.signal");
            std::fs::write(&signal, "").unwrap();
            chown(&signal, Some(uid), None).unwrap();
        }
        let recovery = if in_recovery {
            " -c hot_standby=off"
        } else {
            ""
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c log_statement=all{recovery}",
                dir.path().display()
            ))
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PasswordServer { port, bin, dir }
    }
}

impl PasswordServer {
    /// The server's log so far (it logs every statement, as an audited server would).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PasswordServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
