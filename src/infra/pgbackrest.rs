//! pgBackRest, read-only: `pgbackrest info --output=json` (the stanza's status, backups and
//! archive range) and `pgbackrest check` (the stanza's configuration and WAL archiving). Each
//! command runs with a deadline and is killed when it passes it. Nothing here writes to the
//! repository except what `check` itself archives (one WAL segment, as pgBackRest documents).

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

/// How to run pgbackrest for one stanza and repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub binary: String,
    /// `--config`; empty: pgbackrest's default.
    pub config: String,
    pub stanza: String,
    pub repo: u32,
    /// Each command is killed when it runs longer.
    pub deadline: Duration,
}

/// Why a pgbackrest command gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum PgBackRestError {
    #[error("could not run {binary}: {source} (install pgbackrest or set pgbackrest.binary)")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("pgbackrest {command} did not finish within {ms} ms")]
    TimedOut { command: &'static str, ms: u128 },
    #[error("pgbackrest {command} failed ({}): {message}", code.map_or("killed".to_owned(), |c| format!("exit {c}")))]
    Failed {
        command: &'static str,
        code: Option<i32>,
        message: String,
    },
    #[error("pgbackrest info printed what is not its JSON: {0}")]
    Parse(#[from] serde_json::Error),
}

/// A status as pgbackrest reports it: a code and its words.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusCode {
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

/// One stanza of `pgbackrest info --output=json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StanzaInfo {
    pub name: String,
    pub status: StatusCode,
    #[serde(default)]
    pub backup: Vec<BackupInfo>,
    #[serde(default)]
    pub archive: Vec<ArchiveInfo>,
    #[serde(default)]
    pub repo: Vec<RepoInfo>,
}

/// One backup of the stanza.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BackupInfo {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Span,
    /// Set (true) when pgBackRest found the backup's files damaged.
    #[serde(default)]
    pub error: Option<bool>,
    pub database: RepoRef,
}

/// Start and stop, Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Span {
    pub start: i64,
    pub stop: i64,
}

/// Which repository an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RepoRef {
    #[serde(rename = "repo-key")]
    pub repo_key: u32,
}

/// The WAL range archived for one database history.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ArchiveInfo {
    pub id: String,
    pub min: Option<String>,
    pub max: Option<String>,
    pub database: RepoRef,
}

/// One repository's status for the stanza.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepoInfo {
    pub key: u32,
    pub status: StatusCode,
}

/// What `pgbackrest check` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Exit 0.
    pub ok: bool,
    /// pgBackRest's error code (its exit status), when it failed.
    pub code: Option<i32>,
    /// The ERROR and WARN lines it printed (what a person reads).
    pub message: String,
}

impl StanzaInfo {
    /// The newest backup of `repo` that pgBackRest did not mark damaged.
    pub fn newest(&self, repo: u32) -> Option<&BackupInfo> {
        self.backup
            .iter()
            .filter(|b| b.database.repo_key == repo && b.error != Some(true))
            .max_by_key(|b| b.timestamp.stop)
    }

    /// The status of `repo` for this stanza, if pgBackRest listed it.
    pub fn repo_status(&self, repo: u32) -> Option<&StatusCode> {
        self.repo.iter().find(|r| r.key == repo).map(|r| &r.status)
    }
}

/// Parses `pgbackrest info --output=json`.
pub fn parse_info(json: &str) -> Result<Vec<StanzaInfo>, serde_json::Error> {
    serde_json::from_str(json)
}

/// The lines of pgbackrest's output a person needs: its ERROR/WARN lines and their HINTs.
pub fn message_of(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ERROR") || l.starts_with("WARN") || l.starts_with("HINT"))
        .collect();
    let text = if lines.is_empty() {
        output.trim().to_owned()
    } else {
        lines.join(" ")
    };
    // pgBackRest quotes its configuration and the store's answers in errors: nothing that looks
    // like a credential goes on into a finding.
    crate::domain::patterns::redact(&text)
        .chars()
        .take(1000)
        .collect()
}

impl Command {
    /// The command line's options common to every command (never a secret: pgbackrest reads
    /// its keys from its configuration file or environment).
    fn options(&self) -> Vec<String> {
        let mut o = Vec::new();
        if !self.config.is_empty() {
            o.push(format!("--config={}", self.config));
        }
        o.push(format!("--stanza={}", self.stanza));
        o.push("--log-level-console=warn".to_owned());
        o.push("--log-level-stderr=off".to_owned());
        o
    }

    /// Runs `pgbackrest OPTIONS command EXTRA` within the deadline: exit status and output.
    async fn run(
        &self,
        command: &'static str,
        extra: &[String],
    ) -> Result<(Option<i32>, String), PgBackRestError> {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(self.options())
            .args(extra)
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| PgBackRestError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let out = tokio::time::timeout(self.deadline, child.wait_with_output())
            .await
            .map_err(|_| PgBackRestError::TimedOut {
                command,
                ms: self.deadline.as_millis(),
            })?
            .map_err(|source| PgBackRestError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.code(), text))
    }

    /// `pgbackrest info --output=json` for the stanza.
    pub async fn info(&self) -> Result<Vec<StanzaInfo>, PgBackRestError> {
        // `check` checks every repository and takes no --repo; `info` reads the one judged.
        let extra = ["--output=json".to_owned(), format!("--repo={}", self.repo)];
        let (code, out) = self.run("info", &extra).await?;
        if code != Some(0) {
            return Err(PgBackRestError::Failed {
                command: "info",
                code,
                message: message_of(&out),
            });
        }
        // Warnings go to the console before the JSON; the JSON is the last line.
        let json = out.lines().rev().find(|l| l.starts_with('[')).unwrap_or("");
        Ok(parse_info(json)?)
    }

    /// `pgbackrest check`, its WAL wait bounded by most of the deadline so that it reports why
    /// instead of being killed.
    pub async fn check(&self) -> Result<CheckOutcome, PgBackRestError> {
        let wait = (self.deadline.as_secs_f64() * 0.8).max(0.1);
        let (code, out) = self
            .run("check", &[format!("--archive-timeout={wait:.1}")])
            .await?;
        Ok(CheckOutcome {
            ok: code == Some(0),
            code: code.filter(|c| *c != 0),
            message: message_of(&out),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pgbackrest info --output=json` of pgBackRest 2.45 after one full backup (trimmed).
    const ONE_FULL: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000003","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000003"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":22992374,"repository":{"delta":3043375,"size":3043375},"size":22992374},"label":"20261208-011828F","lsn":{"start":"0/2000028","stop":"0/3000050"},"prior":null,"reference":null,"timestamp":{"start":1796692708,"stop":1796692713},"type":"full"}],"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7716736400460039721,"version":"15"}],"name":"main","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn info_json_gives_status_newest_backup_and_archive_range() {
        let info = parse_info(ONE_FULL).unwrap();
        let s = &info[0];
        assert_eq!(s.name, "main");
        assert_eq!(s.status.code, 0);
        let newest = s.newest(1).unwrap();
        assert_eq!(
            (newest.label.as_str(), newest.kind.as_str()),
            ("20261208-011828F", "full")
        );
        assert_eq!(newest.timestamp.stop, 1796692713);
        assert!(s.newest(2).is_none(), "repo 2 has no backup");
        assert_eq!(
            s.archive[0].max.as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(s.repo_status(1).unwrap().message, "ok");
    }

    #[test]
    fn a_damaged_backup_is_never_the_newest() {
        let damaged = ONE_FULL.replace("\"error\":false", "\"error\":true");
        assert!(parse_info(&damaged).unwrap()[0].newest(1).is_none());
    }

    #[test]
    fn the_message_keeps_errors_warnings_and_hints() {
        let out = "P00  INFO: check command begin\nERROR: [055]: unable to load info file\n       HINT: is archive_command configured?\n";
        assert_eq!(
            message_of(out),
            "ERROR: [055]: unable to load info file HINT: is archive_command configured?"
        );
    }

    #[tokio::test]
    async fn a_missing_program_says_what_to_install_or_set() {
        let cmd = Command {
            binary: "/nonexistent/pgbackrest".into(),
            config: String::new(),
            stanza: "main".into(),
            repo: 1,
            deadline: Duration::from_secs(5),
        };
        let err = cmd.info().await.unwrap_err().to_string();
        assert!(
            err.starts_with("could not run /nonexistent/pgbackrest:")
                && err.ends_with("(install pgbackrest or set pgbackrest.binary)"),
            "{err}"
        );
    }

    #[test]
    fn a_credential_quoted_in_an_error_does_not_reach_the_message() {
        let out = "ERROR: [029]: S3 request failed: repo1-s3-key-secret=canary-s3-secret rejected";
        let m = message_of(out);
        assert!(!m.contains("canary"), "{m}");
        assert!(m.starts_with("ERROR: [029]"), "{m}");
    }
}
