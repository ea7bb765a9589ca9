//! A private PostgreSQL with WAL archiving, for the pgBackRest source and the WAL-archive guard:
//! `initdb` on a free loopback port (run as the `postgres` OS user, trust auth on loopback),
//! `archive_mode = on`, the server log collected in the data directory (so that
//! `pg_current_logfile()` names it), and either a real pgBackRest stanza whose repo1 is a posix
//! path in the test's temp dir (`archive_command` = `pgbackrest archive-push`) or an
//! `archive_command` of the test's choosing. Stopped on drop.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, Executor, PgConnection};

/// The stanza every test's repository holds.
pub const STANZA: &str = "main";

/// How the server archives its WAL.
pub enum Archive {
    /// `pgbackrest archive-push` into a stanza created in repo1 (a directory of the test).
    PgBackRest,
    /// This `archive_command`, verbatim (`false`, …).
    Command(String),
    /// `pgbackrest archive-push` to a repository that does not exist (no stanza was created).
    PgBackRestNoRepository,
}

/// The running server and, with [`Archive::PgBackRest`], its pgBackRest configuration.
pub struct ArchivingServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    uid: u32,
}

fn postgres_uid() -> u32 {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres OS user (scripts/test.sh installs PostgreSQL)")
}

/// Fails the test, naming the package, when pgbackrest is not installed.
pub fn require_pgbackrest() {
    let ok = Command::new("pgbackrest").arg("version").output().is_ok();
    assert!(
        ok,
        "pgbackrest is not installed: run scripts/test.sh, or apt-get install -y --no-install-recommends pgbackrest"
    );
}

impl ArchivingServer {
    /// Starts the server archiving as `archive` says.
    pub fn start(archive: Archive) -> Self {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test.sh installs them)")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .expect("a PostgreSQL version directory");
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let uid = postgres_uid();
        let dir = tempfile::tempdir().unwrap();
        chown(dir.path(), Some(uid), None)
            .expect("this test runs as root, to run PostgreSQL as the postgres user");
        let port = crate::support::procs::free_port();
        let s = ArchivingServer {
            port,
            dir,
            bin,
            uid,
        };
        let out = s
            .as_postgres(&s.bin.join("initdb"))
            .arg("-D")
            .arg(s.data())
            .args(["-U", "postgres", "--auth-host=trust", "--auth-local=trust"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let command = match &archive {
            Archive::PgBackRest => {
                require_pgbackrest();
                s.write_pgbackrest_conf(&s.dir.path().join("repo"));
                format!(
                    "pgbackrest --config={} --stanza={STANZA} archive-push %p",
                    s.conf().display()
                )
            }
            Archive::Command(c) => c.clone(),
            Archive::PgBackRestNoRepository => {
                require_pgbackrest();
                s.write_pgbackrest_conf(&s.dir.path().join("repo"));
                std::fs::remove_dir(s.dir.path().join("repo")).unwrap();
                format!(
                    "pgbackrest --config={} --stanza={STANZA} archive-push %p",
                    s.conf().display()
                )
            }
        };
        std::fs::write(
            s.data().join("postgresql.auto.conf"),
            format!(
                "archive_mode = on\narchive_command = '{}'\nlogging_collector = on\n\
                 log_directory = 'log'\nlog_filename = 'postgresql.log'\nwal_level = replica\n",
                command.replace('\'', "''")
            ),
        )
        .unwrap();
        let out = s
            .as_postgres(&s.bin.join("pg_ctl"))
            .arg("-D")
            .arg(s.data())
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1",
                s.dir.path().display()
            ))
            .arg("-l")
            .arg(s.dir.path().join("start.log"))
            .args(["-w", "-t", "30", "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Archive::PgBackRest = archive {
            s.pgbackrest_as_postgres(&["stanza-create"]);
        }
        s
    }

    fn as_postgres(&self, program: &Path) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's `pg_ctl`.
    pub fn pg_ctl(&self) -> PathBuf {
        self.bin.join("pg_ctl")
    }

    /// An empty directory of the test that the postgres user may write (restore tests).
    pub fn postgres_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        chown(&d, Some(self.uid), None).unwrap();
        d
    }

    /// The pgBackRest configuration file of the test.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("pgbackrest.conf")
    }

    /// Writes the configuration with repo1 at `repo` (created when missing).
    fn write_pgbackrest_conf(&self, repo: &Path) {
        std::fs::create_dir_all(repo).unwrap();
        chown(repo, Some(self.uid), None).unwrap();
        let dir = self.dir.path().display();
        std::fs::write(
            self.conf(),
            format!(
                "[{STANZA}]\npg1-path={}\npg1-port={}\npg1-socket-path={dir}\npg1-user=postgres\n\n\
                 [global]\nrepo1-path={}\nrepo1-retention-full=2\nlog-level-console=warn\n\
                 log-level-file=off\nlock-path={dir}\nstart-fast=y\narchive-timeout=20\n",
                self.data().display(),
                self.port,
                repo.display()
            ),
        )
        .unwrap();
    }

    /// Runs `pgbackrest --config --stanza ARGS` as the postgres user; panics on failure.
    pub fn pgbackrest_as_postgres(&self, args: &[&str]) {
        let out = self
            .as_postgres(Path::new("/usr/bin/pgbackrest"))
            .arg(format!("--config={}", self.conf().display()))
            .arg(format!("--stanza={STANZA}"))
            .args(args)
            .output()
            .expect("pgbackrest");
        assert!(
            out.status.success(),
            "pgbackrest {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The superuser's URL (trust on loopback).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url())
            .await
            .expect("private server answers")
    }

    /// Writes `segments` WAL segments' worth of changes, switching segment after each.
    pub async fn generate_wal(&self, segments: u32) {
        let mut c = self.connect().await;
        c.execute("CREATE TABLE IF NOT EXISTS churn (id bigserial, pad text)")
            .await
            .unwrap();
        for _ in 0..segments {
            c.execute(
                "INSERT INTO churn (pad) SELECT repeat('x', 200) FROM generate_series(1, 2000)",
            )
            .await
            .unwrap();
            c.execute("SELECT pg_switch_wal()").await.unwrap();
        }
    }

    /// `pg_stat_archiver`'s failed_count and archived_count.
    pub async fn archiver_counts(&self) -> (i64, i64) {
        sqlx::query_as("SELECT failed_count, archived_count FROM pg_stat_archiver")
            .fetch_one(&mut self.connect().await)
            .await
            .unwrap()
    }

    /// The WAL segments waiting for the archiver (`.ready`).
    pub async fn ready_segments(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
        )
        .fetch_one(&mut self.connect().await)
        .await
        .unwrap()
    }

    /// Dates every segment waiting for the archiver `minutes` back (their files' modification
    /// time, which is when PostgreSQL marked them ready): a failure that began that long ago.
    pub fn age_ready_segments(&self, minutes: u64) {
        let dir = self.data().join("pg_wal/archive_status");
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(minutes * 60);
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "ready") {
                let f = std::fs::File::options().write(true).open(&path).unwrap();
                f.set_modified(then).unwrap();
            }
        }
    }

    /// Waits (bounded) until `pg_stat_archiver` counts a failure.
    pub async fn wait_for_failures(&self) {
        for _ in 0..100 {
            if self.archiver_counts().await.0 > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the archiver never failed");
    }
}

impl Drop for ArchivingServer {
    fn drop(&mut self) {
        let _ = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
