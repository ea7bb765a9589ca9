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

/// The server's major version, asked with the backup job's credentials.
async fn server_major(ctx: &ProbeContext) -> Result<u32, String> {
    let secret = ctx
        .backup_secret()
        .await
        .map_err(|e| format!("no backup credentials: {e}"))?;
    let (Some(user), Some(password)) = (&secret.postgres_user, &secret.postgres_password) else {
        return Err("the Secret lacks postgres-user or postgres-password".into());
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
        Err(_) => Err(format!(
            "the server did not answer within {} ms",
            timeout.as_millis()
        )),
        Ok(Err(e)) => Err(format!("asking the server its version failed: {e}")),
        Ok(Ok(v)) => u32::try_from(v / 10_000).map_err(|_| format!("odd server_version_num {v}")),
    }
}

/// The images of the backup CronJob's containers; `Err` says why they could not be read.
async fn cronjob_images(ctx: &ProbeContext) -> Result<Vec<String>, String> {
    let Some(client) = ctx.kube.clone() else {
        return Err("no Kubernetes API configured".into());
    };
    let k = &ctx.settings.kubernetes;
    let api: Api<CronJob> = Api::namespaced(client, &k.namespace);
    let cj = api
        .get_opt(&k.backup_cronjob)
        .await
        .map_err(|e| format!("reading CronJob {}: {e}", k.backup_cronjob))?
        .ok_or_else(|| format!("CronJob {} does not exist", k.backup_cronjob))?;
    Ok(cj
        .spec
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
        .unwrap_or_default())
}

/// `<program> --version`'s major; `Err` says why it is unknown.
async fn program_major(program: &str) -> Result<u32, String> {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {program} --version: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    version_line_major(&text).ok_or_else(|| format!("{program} --version said {:?}", text.trim()))
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
    server: Result<u32, String>,
    images: Result<Vec<String>, String>,
    restore: Result<u32, String>,
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
            evidence["server_error"] = json!(e);
            words.push(format!("server version unknown ({e})"));
        }
    }
    let server = server.ok();
    match images {
        Err(e) => {
            evidence["image_error"] = json!(e);
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
            evidence["pg_restore_error"] = json!(e);
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
}
