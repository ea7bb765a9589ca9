//! The restore test of a pgBackRest target: is the newest backup in the repository restorable,
//! and how long does it take? `pgbackrest restore --type=immediate` of the newest good backup
//! into a scratch data directory (the WAL it needs comes from the repository through
//! `archive-get`), the directory started with `pg_ctl` as a scratch server on a free loopback
//! port with `archive_mode = off` (it must never push WAL into the repository it came from),
//! recovery to consistency and promotion, then the same named `restore_test.checks` as a
//! pg_dump restore on each configured database, and the RTO (`restore_test.rto_minutes`) of
//! the restore phase: from the start of `pgbackrest restore` to a server out of recovery. The
//! scratch server is stopped and its directory removed afterwards, pass, fail or error.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Serialize;
use sqlx::{ConnectOptions, Connection};

use crate::config::Settings;
use crate::domain::restore_test::{CheckResult, Problem, RtoResult, TestStatus};
use crate::infra::pgbackrest::message_of;
use crate::probes::pgbackrest::command;
use crate::runbook::restore::{checks_for, run_checks, PgTarget};

/// What one restore test found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: TestStatus,
    /// Why it failed or could not run.
    pub reason: Option<String>,
    /// The backup restored (pgBackRest's label).
    pub backup: Option<String>,
    /// From the start of `pgbackrest restore` to a scratch server out of recovery.
    pub restore_ms: Option<i64>,
    pub rto: Option<RtoResult>,
    /// Every check of every database, prefixed by its database (`db: name`).
    pub checks: Vec<CheckResult>,
}

impl Report {
    fn problem(p: Problem, backup: Option<String>) -> Self {
        Self {
            status: if p.backup_at_fault {
                TestStatus::Failed
            } else {
                TestStatus::Error
            },
            reason: Some(p.reason),
            backup,
            restore_ms: None,
            rto: None,
            checks: Vec::new(),
        }
    }
}

/// The scratch server: stopped (immediately) and its directory removed when dropped.
struct Scratch {
    dir: PathBuf,
    settings: PgBackRestCommands,
    started: bool,
}

/// How the procedure runs its programs.
#[derive(Clone)]
struct PgBackRestCommands {
    run_as: Vec<String>,
    pg_ctl: String,
}

impl PgBackRestCommands {
    fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = match self.run_as.split_first() {
            Some((first, rest)) => {
                let mut c = tokio::process::Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }
}

impl Scratch {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.started {
            let mut c = match self.settings.run_as.split_first() {
                Some((first, rest)) => {
                    let mut c = std::process::Command::new(first);
                    c.args(rest).arg(&self.settings.pg_ctl);
                    c
                }
                None => std::process::Command::new(&self.settings.pg_ctl),
            };
            let _ = c
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd` to the end within `deadline`: success, or the words of its failure.
async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
    deadline: Duration,
) -> Result<(), String> {
    let child = cmd
        .spawn()
        .map_err(|e| format!("could not run {what}: {e}"))?;
    let out = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .map_err(|_| format!("{what} did not finish within {} s", deadline.as_secs()))?
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        message_of(&text)
    ))
}

/// A loopback port free a moment ago.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Restores the newest backup of the target's stanza and checks it; see the module docs.
pub async fn run_test(settings: &Settings) -> Report {
    let p = &settings.pgbackrest;
    let deadline = Duration::from_secs(settings.restore_test.timeout_seconds.max(1));
    let info = match command(settings).info().await {
        Ok(info) => info,
        Err(e) => return Report::problem(Problem::test(e), None),
    };
    let newest = info
        .iter()
        .find(|s| s.name == p.stanza)
        .and_then(|s| s.newest(p.repo));
    let Some(backup) = newest.map(|b| b.label.clone()) else {
        return Report::problem(
            Problem::backup(format!(
                "the repository holds no valid backup of stanza {}",
                p.stanza
            )),
            None,
        );
    };
    let parent = if p.restore_dir.is_empty() {
        std::env::temp_dir()
    } else {
        PathBuf::from(&p.restore_dir)
    };
    let programs = PgBackRestCommands {
        run_as: p.run_as.clone(),
        pg_ctl: p.pg_ctl.clone(),
    };
    let mut scratch = Scratch {
        dir: parent.join(format!(
            "{}-{:08x}",
            settings.restore_test.scratch_prefix,
            rand::random::<u32>()
        )),
        settings: programs.clone(),
        started: false,
    };
    let clock = Instant::now();
    match restore_and_start(settings, &programs, &mut scratch, &backup, deadline).await {
        Ok(port) => {
            let restore_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
            check(settings, port, backup, restore_ms).await
        }
        Err(problem) => Report::problem(problem, Some(backup)),
    }
}

/// `pgbackrest restore` into the scratch directory, then the scratch server up and promoted;
/// its port.
async fn restore_and_start(
    settings: &Settings,
    programs: &PgBackRestCommands,
    scratch: &mut Scratch,
    backup: &str,
    deadline: Duration,
) -> Result<u16, Problem> {
    let p = &settings.pgbackrest;
    let mut restore = programs.command(&p.binary);
    if !p.config.is_empty() {
        restore.arg(format!("--config={}", p.config));
    }
    restore
        .arg(format!("--stanza={}", p.stanza))
        .arg(format!("--repo={}", p.repo))
        .arg(format!("--set={backup}"))
        .arg(format!("--pg1-path={}", scratch.data().display()))
        .args([
            "--type=immediate",
            "--target-action=promote",
            "--archive-mode=off",
            "--log-level-console=warn",
            "--log-level-stderr=off",
            "restore",
        ]);
    run(restore, "pgbackrest restore", deadline)
        .await
        .map_err(Problem::backup)?;
    let port = free_port().map_err(Problem::test)?;
    let mut start = programs.command(&p.pg_ctl);
    start
        .arg("-D")
        .arg(scratch.data())
        .arg("-o")
        .arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c archive_mode=off",
            scratch.data().display()
        ))
        .arg("-l")
        .arg(scratch.dir.join("server.log"))
        .args(["-w", "-t"])
        .arg(deadline.as_secs().to_string())
        .arg("start");
    scratch.started = true;
    if let Err(why) = run(start, "pg_ctl start", deadline + Duration::from_secs(5)).await {
        let log = std::fs::read_to_string(scratch.dir.join("server.log")).unwrap_or_default();
        let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(Problem::backup(format!("{why}; server log: {tail}")));
    }
    wait_promoted(settings, port, deadline).await?;
    Ok(port)
}

fn target(settings: &Settings, port: u16) -> Result<PgTarget, Problem> {
    let url = format!(
        "postgres://{}@127.0.0.1:{port}/postgres",
        settings.pgbackrest.restore_user
    );
    PgTarget::parse(&SecretString::from(url)).map_err(Problem::test)
}

/// Waits until the scratch server has left recovery (bounded by `deadline`).
async fn wait_promoted(settings: &Settings, port: u16, deadline: Duration) -> Result<(), Problem> {
    let t = target(settings, port)?;
    let until = Instant::now() + deadline;
    let mut last = String::new();
    while Instant::now() < until {
        match t.options("postgres").connect().await {
            Ok(mut c) => {
                let r: Result<bool, _> = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut c)
                    .await;
                let _ = c.close().await;
                match r {
                    Ok(false) => return Ok(()),
                    Ok(true) => last = "still in recovery".to_owned(),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Problem::backup(format!(
        "the restored server did not leave recovery within {} s: {last}",
        deadline.as_secs()
    )))
}

/// The checks of every configured database and the RTO.
async fn check(settings: &Settings, port: u16, backup: String, restore_ms: i64) -> Report {
    let t = match target(settings, port) {
        Ok(t) => t,
        Err(p) => return Report::problem(p, Some(backup)),
    };
    let cfg = &settings.restore_test;
    let mut reasons = Vec::new();
    let mut all = Vec::new();
    for db in &settings.target.databases {
        // A database the backup does not hold fails the test even without checks.
        if let Err(e) = t.options(db).connect().await {
            reasons.push(format!(
                "the restored server has no usable database {db}: {e}"
            ));
            continue;
        }
        match run_checks(&t, db, &checks_for(cfg, db)).await {
            Ok(results) => {
                for mut c in results {
                    if !c.passed {
                        reasons.push(format!(
                            "check {:?} on {db} {}",
                            c.name,
                            c.reason.as_deref().unwrap_or("failed")
                        ));
                    }
                    c.name = format!("{db}: {}", c.name);
                    all.push(c);
                }
            }
            Err(p) => reasons.push(p.reason),
        }
    }
    let rto = (cfg.rto_minutes > 0.0).then(|| RtoResult::new(cfg.rto_minutes, restore_ms));
    if let Some(r) = rto.as_ref().filter(|r| !r.met) {
        reasons.push(format!(
            "the restore took {}, over the RTO of {} min",
            crate::domain::duration::measured(r.restore_ms as f64 / 1000.0),
            r.rto_minutes
        ));
    }
    Report {
        status: if reasons.is_empty() {
            TestStatus::Passed
        } else {
            TestStatus::Failed
        },
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        backup: Some(backup),
        restore_ms: Some(restore_ms),
        rto,
        checks: all,
    }
}
