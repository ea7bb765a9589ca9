//! moto's real server (S3 and IAM) for tests: started on a free loopback port, ready before a
//! test uses it, killed and reaped when dropped. IAM enforcement can be switched on, so that an
//! "access denied" in a test is a real decision of moto's policy engine, not a stub.
//!
//! The binary is `$MOTO_SERVER`, else `moto_server` on PATH (`pip install 'moto[server]'`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_credential_types::Credentials;
use backup_remediator::config::Settings;
use backup_remediator::infra::aws::{self, Limits};

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// The prefix the backup job writes under (the default configuration's).
pub const PREFIX: &str = "postgres-backups/";
/// The prefix of tests that enforce IAM: no `/` (see [`Moto::settings_with_prefix`]).
pub const ENFORCED_PREFIX: &str = "postgres-backups";

/// A running moto server.
pub struct Moto {
    child: Child,
    pub url: String,
    log: tempfile::NamedTempFile,
    /// Where moto's recorder writes the requests it serves (see [`Moto::start_recording`]).
    _recording: tempfile::NamedTempFile,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The moto_server binary, or a failed test saying how to install it.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("moto_server"))
            .find(|f| f.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "moto_server is not installed: run scripts/test.sh, or `pip install 'moto[server]'` \
             (or set MOTO_SERVER to the binary)"
        )
    })
}

/// Credentials moto accepts while it does not enforce IAM (any would do).
pub fn admin_credentials() -> Credentials {
    Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "moto-admin-not-a-secret",
        None,
        None,
        "test",
    )
}

impl Moto {
    /// A moto server that accepts every request (IAM not enforced).
    pub async fn start() -> Self {
        Self::spawn(Command::new(binary())).await
    }

    /// A moto server in which an object whose key contains `aged<N>h` (e.g.
    /// `postgres-backup-aged30h_link_users.sql.enc`) reports a LastModified N hours ago, and
    /// which can [`Moto::fill`]: moto's own server, started from `support/aging_moto.py`. The interpreter is
    /// `$MOTO_PYTHON`, else the `python3` next to moto_server (its venv's), else `python3`.
    pub async fn start_aging() -> Self {
        let python = std::env::var_os("MOTO_PYTHON")
            .map(PathBuf::from)
            .or_else(|| {
                let beside = binary().parent()?.join("python3");
                beside.is_file().then_some(beside)
            })
            .unwrap_or_else(|| PathBuf::from("python3"));
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/support/aging_moto.py"
        );
        let mut cmd = Command::new(python);
        cmd.arg(script);
        Self::spawn(cmd).await
    }

    /// Runs `cmd` (a moto server) on a free loopback port and waits until it answers.
    async fn spawn(mut cmd: Command) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let recording = tempfile::NamedTempFile::new().unwrap();
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_RECORDER_FILEPATH", recording.path())
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto_server: {e} (run scripts/test.sh)"));
        let mut moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _recording: recording,
        };
        moto.wait_ready().await;
        moto
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            let ready = http.get(format!("{}/moto-api/", self.url)).send().await;
            if ready.map(|r| r.status().is_success()).unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        panic!("moto_server did not become ready at {}:\n{log}", self.url);
    }

    /// From now on every request must be signed by a known access key and allowed by its
    /// user's policies (moto's `reset-auth`: no more unauthenticated requests).
    pub async fn enforce_iam(&self) {
        self.reset_auth("0").await;
    }

    async fn reset_auth(&self, count: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.url))
            .body(count.to_owned())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "moto reset-auth: {}", r.status());
    }

    /// From now on moto records every request it serves (its recorder), from a clean slate.
    pub async fn start_recording(&self) {
        let http = reqwest::Client::new();
        for verb in ["reset-recording", "start-recording"] {
            let r = http
                .post(format!("{}/moto-api/recorder/{verb}", self.url))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "moto {verb}: {}", r.status());
        }
    }

    /// The requests moto served since [`Moto::start_recording`]: (method, URL), in order.
    pub async fn recorded(&self) -> Vec<(String, String)> {
        let text = reqwest::get(format!("{}/moto-api/recorder/download-recording", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["method"].as_str().unwrap_or_default().to_owned(),
                    v["url"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Settings pointing S3 and IAM at this server, plus `extra` TOML.
    pub fn settings(&self, extra: &str) -> Settings {
        self.settings_with_prefix(PREFIX, extra)
    }

    /// [`Moto::settings`] with another backup prefix. While moto enforces IAM it recomputes
    /// each request's signature from the *decoded* query string, so a `/` in ListObjectsV2's
    /// `prefix` parameter makes it refuse a correct signature (real S3 does not): tests that
    /// enforce IAM use [`ENFORCED_PREFIX`].
    pub fn settings_with_prefix(&self, prefix: &str, extra: &str) -> Settings {
        Settings::from_toml(&format!(
            "[s3]\nendpoint = \"{url}\"\nforce_path_style = true\nregion = \"{REGION}\"\nprefix = \"{prefix}\"\n\
             [iam]\nendpoint = \"{url}\"\n\
             [probes]\ndeadline_ms = 8000\n{extra}",
            url = self.url
        ))
        .unwrap()
    }

    /// An S3 client with `credentials`.
    pub fn s3(&self, credentials: Credentials) -> aws_sdk_s3::Client {
        aws::s3_client(
            &self.settings("").s3,
            credentials,
            Limits::for_deadline(Duration::from_secs(8)),
        )
    }

    /// An IAM client with `credentials`.
    pub async fn iam(&self, credentials: Credentials) -> aws_sdk_iam::Client {
        aws::iam_client(
            &self.settings("").iam,
            REGION,
            Some(credentials),
            Limits::for_deadline(Duration::from_secs(8)),
        )
        .await
    }

    /// Creates `bucket`.
    pub async fn create_bucket(&self, bucket: &str) {
        self.s3(admin_credentials())
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    }

    /// Uploads `body` as `key`.
    pub async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3(admin_credentials())
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }

    /// Stores `n` one-byte objects `{dir}filler-{i:05}.bin` (keys that are not backups) in
    /// moto's backend at once; how long it took. Only a server from [`Moto::start_aging`] can.
    pub async fn fill(&self, bucket: &str, dir: &str, n: usize) -> Duration {
        let started = std::time::Instant::now();
        let r = reqwest::Client::new()
            .post(format!("{}/_test/fill", self.url))
            .query(&[("bucket", bucket), ("prefix", dir), ("n", &n.to_string())])
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "filling needs Moto::start_aging: {}",
            r.status()
        );
        started.elapsed()
    }

    /// Creates IAM `user` with the inline policy `policy_name` = `document`, and an access key.
    pub async fn user_with_policy(
        &self,
        user: &str,
        policy_name: &str,
        document: &serde_json::Value,
    ) -> Credentials {
        let iam = self.iam(admin_credentials()).await;
        iam.create_user().user_name(user).send().await.unwrap();
        iam.put_user_policy()
            .user_name(user)
            .policy_name(policy_name)
            .policy_document(document.to_string())
            .send()
            .await
            .unwrap();
        let key = iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .unwrap();
        let key = key.access_key().unwrap();
        Credentials::new(
            key.access_key_id(),
            key.secret_access_key(),
            None,
            None,
            "moto",
        )
    }
}
