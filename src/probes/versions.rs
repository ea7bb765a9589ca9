//! `versions`: client/server version drift — the drift that silently broke real backups (a
//! pg_dump older than the server refuses to dump it). It compares the primary's major version
//! (`server_version_num`, asked with the backup job's own credentials) with the major of the
//! pg_dump in the backup CronJob's image (read from an official `postgres:N…` tag; any other
//! image is reported as unknown, and said so), and the `pg_restore` this service runs for
//! restore tests with the server (a restore test of a newer server's dump would fail).
//! The job log's `server version mismatch` line is the `backup_job` probe's.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use k8s_openapi::api::batch::v1::CronJob;
use kube::Api;
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::{ConnectOptions, Connection, Row};

use super::secret::SecretUnavailable;
use super::{Probe, ProbeContext, ProbeOutput, Signal};

pub struct Versions;

/// The pg_dump major of an official PostgreSQL image (`postgres:14-alpine`,
/// `docker.io/library/postgres:15.4`), or `None` when the image does not say.
pub fn image_major(image: &str) -> Option<u32> {
    let (repo, tag) = split_image(image)?;
    let official = matches!(
        repo,
        "postgres" | "library/postgres" | "docker.io/postgres" | "docker.io/library/postgres"
    ) || repo == "index.docker.io/library/postgres";
    if !official {
        return None;
    }
    let digits: String = tag.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|m| *m >= 9)
}

/// Repository and tag of an image reference (the digest, if any, dropped).
fn split_image(image: &str) -> Option<(&str, &str)> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    let colon = without_digest[slash..].find(':')? + slash;
    Some((&without_digest[..colon], &without_digest[colon + 1..]))
}

/// The image to set so that pg_dump matches a server of major `server`: the same repository and
/// tag variant with the major replaced (`postgres:14-alpine` → `postgres:15-alpine`,
/// `postgres:14.9` → `postgres:15`).
pub fn suggested_image(image: &str, server: u32) -> String {
    let Some((repo, tag)) = split_image(image) else {
        return format!("postgres:{server}");
    };
    let rest = tag.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    format!("{repo}:{server}{rest}")
}

/// The major of a `--version` line: `pg_restore (PostgreSQL) 15.20 (Debian …)` → 15.
pub fn version_line_major(line: &str) -> Option<u32> {
    line.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Why a version could not be learned (said in the finding's summary and evidence).
#[derive(Debug, thiserror::Error)]
enum VersionUnknown {
    #[error("no backup credentials: {0}")]
    NoCredentials(#[from] SecretUnavailable),
    #[error("the Secret lacks postgres-user or postgres-password")]
    NoLogin,
    #[error("the server did not answer within {0} ms")]
    Timeout(u128),
    #[error("asking the server its version failed: {0}")]
    Query(#[source] sqlx::Error),
    #[error("odd server_version_num {0}")]
    OddServerVersion(i32),
    #[error("no Kubernetes API configured")]
    NoKubernetes,
    #[error("reading CronJob {name}: {source}")]
    CronJob {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("CronJob {0} does not exist")]
    NoCronJob(String),
    #[error("running {program} --version: {source}")]
    Run {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} --version said {said:?}")]
    Unparsed { program: String, said: String },
}

/// The server's major version, asked with the backup job's credentials.
async fn server_major(ctx: &ProbeContext) -> Result<u32, VersionUnknown> {
    let secret = ctx.backup_secret().await?;
    let (Some(user), Some(password)) = (&secret.postgres_user, &secret.postgres_password) else {
        return Err(VersionUnknown::NoLogin);
    };
    let t = &ctx.settings.target;
    let database = t.databases.first().map_or("postgres", String::as_str);
    let opts = super::database::job_options(t, user, password.expose_secret()).database(database);
    let timeout = Duration::from_millis(t.connect_timeout_ms);
    let ask = async {
        let mut conn = opts.connect().await?;
        let row = sqlx::query("SELECT current_setting('server_version_num')::int AS v")
            .fetch_one(&mut conn)
            .await?;
        let v: i32 = row.try_get("v")?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(v)
    };
    match tokio::time::timeout(timeout, ask).await {
        Err(_) => Err(VersionUnknown::Timeout(timeout.as_millis())),
        Ok(Err(e)) => Err(VersionUnknown::Query(e)),
        Ok(Ok(v)) => u32::try_from(v / 10_000).map_err(|_| VersionUnknown::OddServerVersion(v)),
    }
}

/// The images of the backup CronJob's containers; `Err` says why they could not be read.
async fn cronjob_images(ctx: &ProbeContext) -> Result<Vec<String>, VersionUnknown> {
    let Some(client) = ctx.kube.clone() else {
        return Err(VersionUnknown::NoKubernetes);
    };
    let k = &ctx.settings.kubernetes;
    let api: Api<CronJob> = Api::namespaced(client, &k.namespace);
    let cj = api
        .get_opt(&k.backup_cronjob)
        .await
        .map_err(|source| VersionUnknown::CronJob {
            name: k.backup_cronjob.clone(),
            source,
        })?
        .ok_or_else(|| VersionUnknown::NoCronJob(k.backup_cronjob.clone()))?;
    Ok(cj
        .spec
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
        .unwrap_or_default())
}

/// How long a `--version` answer is reused while the program's file is unchanged.
const PROGRAM_MAJOR_TTL: Duration = Duration::from_secs(600);

/// A program's major as its own `--version` said it, and the file it was read from then.
struct ReadMajor {
    file: Option<FileId>,
    read: std::time::Instant,
    major: u32,
}

/// What identifies the program's file: a replaced or upgraded binary reads as a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

/// The file `program` runs (found on `PATH` when the name has no `/`), as a [`FileId`].
fn program_file(program: &str) -> Option<FileId> {
    let path = if program.contains('/') {
        std::path::PathBuf::from(program)
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())?
    };
    let meta = std::fs::metadata(path).ok()?;
    Some(FileId {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// `<program> --version`'s major, run at most once per [`PROGRAM_MAJOR_TTL`] while the program's
/// file is unchanged: every diagnosis asks, and on Debian `pg_restore` is a Perl wrapper whose
/// start costs more CPU than the rest of a diagnosis (half the service's CPU in an alert storm).
/// A failure is never reused: the next diagnosis asks again.
async fn program_major(program: &str) -> Result<u32, VersionUnknown> {
    static READ: tokio::sync::Mutex<Vec<(String, ReadMajor)>> =
        tokio::sync::Mutex::const_new(Vec::new());
    // Held across the run: concurrent diagnoses wait for one answer instead of each forking.
    let mut read = READ.lock().await;
    let file = program_file(program);
    if let Some((_, r)) = read.iter().find(|(p, _)| p == program) {
        if r.file.is_some() && r.file == file && r.read.elapsed() < PROGRAM_MAJOR_TTL {
            return Ok(r.major);
        }
    }
    let major = run_program_major(program).await?;
    read.retain(|(p, _)| p != program);
    read.push((
        program.to_owned(),
        ReadMajor {
            file,
            read: std::time::Instant::now(),
            major,
        },
    ));
    Ok(major)
}

/// Runs `<program> --version`; its major, or why it is unknown.
async fn run_program_major(program: &str) -> Result<u32, VersionUnknown> {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| VersionUnknown::Run {
            program: program.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    version_line_major(&text).ok_or_else(|| VersionUnknown::Unparsed {
        program: program.to_owned(),
        said: text.trim().to_owned(),
    })
}

impl Probe for Versions {
    fn name(&self) -> &'static str {
        "versions"
    }

    fn run(&self, ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async move {
            let restore_program = ctx.settings.restore_test.pg_restore.clone();
            let (server, images, restore) = tokio::join!(
                server_major(&ctx),
                cronjob_images(&ctx),
                program_major(&restore_program)
            );
            assess(server, images, restore, &restore_program)
        })
    }
}

fn assess(
    server: Result<u32, VersionUnknown>,
    images: Result<Vec<String>, VersionUnknown>,
    restore: Result<u32, VersionUnknown>,
    restore_program: &str,
) -> ProbeOutput {
    let mut evidence = json!({
        "server_major": server.as_ref().ok(),
        "pg_restore": restore_program,
        "pg_restore_major": restore.as_ref().ok(),
    });
    let mut words = Vec::new();
    let mut signals = Vec::new();
    let mut problem = false;
    match &server {
        Ok(m) => words.push(format!("server PostgreSQL {m}")),
        Err(e) => {
            evidence["server_error"] = json!(e.to_string());
            words.push(format!("server version unknown ({e})"));
        }
    }
    let server = server.ok();
    match images {
        Err(e) => {
            evidence["image_error"] = json!(e.to_string());
            words.push(format!("backup image unknown ({e})"));
        }
        Ok(images) => {
            let shown: Vec<_> = images
                .iter()
                .map(|i| json!({ "image": i, "pg_dump_major": image_major(i) }))
                .collect();
            evidence["images"] = json!(shown);
            for image in &images {
                match (image_major(image), server) {
                    (Some(client), Some(srv)) if client < srv => {
                        problem = true;
                        let suggested = suggested_image(image, srv);
                        words.push(format!(
                            "pg_dump {client} in {image} is older than the server ({srv}): set the image to {suggested}"
                        ));
                        signals.push(Signal::ClientOlderThanServer {
                            image: image.clone(),
                            client_major: client,
                            server_major: srv,
                            suggested_image: suggested,
                        });
                    }
                    (Some(client), _) => words.push(format!("pg_dump {client} in {image}")),
                    (None, _) => {
                        words.push(format!(
                            "pg_dump version of {image} unknown (not an official postgres:N tag)"
                        ));
                        signals.push(Signal::ClientVersionUnknown {
                            image: image.clone(),
                            server_major: server,
                        });
                    }
                }
            }
        }
    }
    match (restore, server) {
        (Ok(r), Some(srv)) if r < srv => {
            words.push(format!(
                "{restore_program} {r} cannot restore dumps of the server ({srv}): restore tests will fail"
            ));
            signals.push(Signal::RestoreClientOlder {
                program: restore_program.to_owned(),
                client_major: r,
                server_major: srv,
            });
        }
        (Ok(r), _) => words.push(format!("{restore_program} {r}")),
        (Err(e), _) => {
            evidence["pg_restore_error"] = json!(e.to_string());
            words.push(format!("{restore_program} version unknown"));
        }
    }
    let summary = words.join("; ");
    let out = if problem {
        ProbeOutput::problem(summary, signals)
    } else if server.is_none() {
        ProbeOutput::error(summary).with_signals(signals)
    } else {
        ProbeOutput::ok(summary).with_signals(signals)
    };
    out.with_evidence(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::finding::Status;

    #[test]
    fn the_pg_dump_major_comes_from_official_postgres_tags_only() {
        assert_eq!(image_major("postgres:14-alpine"), Some(14));
        assert_eq!(image_major("docker.io/library/postgres:15.4"), Some(15));
        assert_eq!(image_major("postgres:16@sha256:abcd"), Some(16));
        assert_eq!(image_major("postgres:latest"), None);
        assert_eq!(image_major("registry.example/postgres-backup:1.4"), None);
        assert_eq!(image_major("ghcr.io/someone/postgres:14"), None);
        assert_eq!(image_major("postgres"), None);
    }

    #[test]
    fn the_suggested_image_keeps_the_variant_and_sets_the_server_major() {
        assert_eq!(
            suggested_image("postgres:14-alpine", 15),
            "postgres:15-alpine"
        );
        assert_eq!(
            suggested_image("docker.io/library/postgres:14.9", 16),
            "docker.io/library/postgres:16"
        );
        assert_eq!(
            suggested_image("postgres:14.9-bookworm", 15),
            "postgres:15-bookworm"
        );
    }

    #[test]
    fn an_older_pg_dump_is_a_problem_and_an_unknown_image_is_said() {
        let out = assess(
            Ok(15),
            Ok(vec!["postgres:14-alpine".into()]),
            Ok(15),
            "pg_restore",
        );
        assert_eq!(out.status, Status::Problem);
        assert!(
            out.summary.contains("set the image to postgres:15-alpine"),
            "{}",
            out.summary
        );
        let out = assess(
            Ok(15),
            Ok(vec!["registry.example/backup:1".into()]),
            Ok(14),
            "pg_restore",
        );
        assert_eq!(out.status, Status::Ok);
        assert!(out
            .summary
            .contains("unknown (not an official postgres:N tag)"));
        assert!(matches!(
            out.signals[..],
            [
                Signal::ClientVersionUnknown { .. },
                Signal::RestoreClientOlder {
                    client_major: 14,
                    server_major: 15,
                    ..
                }
            ]
        ));
        assert_eq!(
            version_line_major("pg_restore (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(15)
        );
    }

    /// Writes an executable `pg_restore` stand-in that says major `major` and counts its runs.
    #[cfg(unix)]
    fn fake_program(dir: &std::path::Path, major: u32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("pg_restore");
        let runs = dir.join("runs");
        let script = format!(
            "#!/bin/sh\necho run >> '{}'\necho 'pg_restore (PostgreSQL) {major}.1 (stand-in)'\n# {}\n",
            runs.display(),
            "-".repeat(major as usize)
        );
        // A new file (a new inode), as an upgrade replaces a binary.
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_program_major_is_read_once_while_its_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let runs = || {
            std::fs::read_to_string(dir.path().join("runs"))
                .unwrap_or_default()
                .lines()
                .count()
        };
        let program = fake_program(dir.path(), 15);
        let answers = futures_util::future::join_all((0..8).map(|_| program_major(&program))).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(15))), "{answers:?}");
        assert_eq!(runs(), 1, "eight diagnoses at once ran the program once");

        // The program is replaced (an image or package upgrade): the next diagnosis asks it.
        let program = fake_program(dir.path(), 16);
        assert!(matches!(program_major(&program).await, Ok(16)));
        assert_eq!(runs(), 2);

        // A failure is not kept: a program that is gone says so at once.
        std::fs::remove_file(&program).unwrap();
        assert!(matches!(
            program_major(&program).await,
            Err(VersionUnknown::Run { .. })
        ));
    }
}
