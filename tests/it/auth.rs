//! Credentials as an operator meets them, with the real binary: the README's insecure command
//! stays on loopback and never opens a write endpoint; webhook tokens rotate through a file with
//! no refused delivery and no restart (SIGHUP, or the file changing); `token hash`.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::service;
use service::{Backend, Service, PROBES_OFF};

const BINARY: &str = env!("CARGO_BIN_EXE_backup-remediator");
const OLD: &str = "webhook-token-old-2a4d";
const NEW: &str = "webhook-token-new-9c1e";

/// The binary with none of the test's own configuration variables.
fn command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BINARY);
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BR_") {
            c.env_remove(name);
        }
    }
    c
}

/// The sockets listening on `port` (IPv4 and IPv6), as /proc/net shows them: "ADDR:PORT" hex.
fn listening_on(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is column 1, st (0A = LISTEN) column 3.
            if cols.len() > 3 && cols[3] == "0A" && cols[1].ends_with(&format!(":{port:04X}")) {
                found.push(cols[1].to_owned());
            }
        }
    }
    found
}

/// This machine's address on its default route, if it has one other than loopback.
fn network_address() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.255:9").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_insecure_command_listens_on_loopback_only_and_opens_no_write_endpoint() {
    let _port = crate::support::DEFAULT_PORT.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    // Exactly the README's first command: `cargo run --release -- serve --insecure-no-auth`.
    let mut child = command(dir.path())
        .args(["serve", "--insecure-no-auth"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = "http://127.0.0.1:9095";
    let started = Instant::now();
    let mut ready = false;
    while started.elapsed() < Duration::from_secs(20) && !ready {
        ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ready {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let logged = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    if !ready {
        let _ = child.kill();
        panic!("the service did not start on 127.0.0.1:9095:\n{}", logged());
    }

    let sockets = listening_on(9095);
    let network = network_address();
    let reachable = network.map(|ip| {
        TcpStream::connect_timeout(&SocketAddr::from((ip, 9095)), Duration::from_secs(1)).is_ok()
    });
    let mut writes = Vec::new();
    for path in [
        "/api/v1/backups",
        "/api/v1/restore-tests",
        "/api/v1/incidents/1/actions/1/approve",
        "/api/v1/incidents/1/actions/1/reject",
    ] {
        let resp = client
            .post(format!("{base}{path}"))
            .header("X-Actor", "someone")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        writes.push((path, resp.status().as_u16()));
    }
    let whoami = client
        .get(format!("{base}/api/v1/whoami"))
        .send()
        .await
        .unwrap();
    let whoami = (whoami.status().as_u16(), whoami.text().await.unwrap());
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(
        sockets,
        ["0100007F:2387"],
        "listens on 127.0.0.1:9095 and nothing else"
    );
    if let (Some(ip), Some(reachable)) = (network, reachable) {
        assert!(!reachable, "reachable on {ip}:9095 from the network");
    }
    for (path, status) in writes {
        assert!(
            status == 401 || status == 403,
            "POST {path} answered {status} without a credential"
        );
    }
    assert_eq!(whoami.0, 200, "reads stay open on loopback");
    assert!(whoami.1.contains("anonymous"), "{}", whoami.1);
}

#[test]
fn insecure_no_auth_on_a_named_network_address_refuses_to_start_without_the_second_flag() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = command(dir.path())
        .args(["serve", "--insecure-no-auth", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "it started on 0.0.0.0 without authentication: {err}"
    );
    assert!(
        err.contains("server.listen") && err.contains("--insecure-no-auth-on-network"),
        "{err}"
    );
}

#[test]
fn token_hash_prints_the_sha256_of_the_token_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"alice-token\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // printf %s alice-token | sha256sum
    let expected = "9c220f200955d76c0a38d308225e0ef10c5f971acaf2f8d1d8f732affa5bd1dc";
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(printed, expected);
}

async fn deliver(service: &Service, token: &str) -> u16 {
    reqwest::Client::new()
        .post(service.webhook_url())
        .bearer_auth(token)
        .json(&json!({"version": "4", "status": "firing", "alerts": []}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The webhook's tokens in a file, and the service started with it (file polling as given).
async fn with_token_file(poll_ms: u64) -> (tempfile::TempDir, std::path::PathBuf, Service) {
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("webhook-tokens");
    std::fs::write(&file, format!("{OLD}\n{NEW}\n")).unwrap();
    // Service::start opens [auth]; these lines continue it.
    let config = format!(
        "webhook_token_file = \"{}\"\nreload_interval_ms = {poll_ms}\n{PROBES_OFF}",
        file.display()
    );
    let service = Service::start(BINARY, Backend::Sqlite, &config).await;
    (secrets, file, service)
}

/// Waits until the old webhook token is refused; fails after 5 s.
async fn old_token_refused_within_5_s(service: &Service, after: &str) {
    let started = Instant::now();
    while deliver(service, OLD).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the old token is still accepted 5 s after {after}:\n{}",
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Anything but 401 means the credentials were accepted (an empty delivery is then a 400).
fn accepted(status: u16) -> bool {
    status != 401
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_webhook_tokens_are_valid_at_once_and_sighup_retires_the_old_one_without_a_restart() {
    // File polling effectively off: only the signal can reload.
    let (_secrets, file, mut service) = with_token_file(3_600_000).await;
    let pid = service.pid();
    assert!(
        accepted(deliver(&service, OLD).await),
        "old token during the rollout"
    );
    assert!(
        accepted(deliver(&service, NEW).await),
        "new token during the rollout"
    );

    std::fs::write(&file, format!("{NEW}\n")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        accepted(deliver(&service, OLD).await),
        "without a signal (and no polling) the credentials in force stay"
    );
    let kill = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    old_token_refused_within_5_s(&service, "SIGHUP").await;
    assert!(accepted(deliver(&service, NEW).await));
    assert!(service.running(), "SIGHUP must not stop the service");
    assert_eq!(service.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_token_file_is_reloaded_without_a_signal_and_a_broken_one_is_ignored() {
    let (_secrets, file, mut service) = with_token_file(200).await;
    assert!(accepted(deliver(&service, OLD).await));

    std::fs::write(&file, format!("{NEW}\n")).unwrap();
    old_token_refused_within_5_s(&service, "the file changed").await;
    assert!(accepted(deliver(&service, NEW).await));

    // Emptying the file is how a leaked token is revoked: it stops working.
    std::fs::write(&file, "\n").unwrap();
    let started = Instant::now();
    while accepted(deliver(&service, NEW).await) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a token of an emptied file still works:\n{}",
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A file that cannot be read keeps the credentials in force and says so.
    std::fs::write(&file, format!("{NEW}\n")).unwrap();
    let started = Instant::now();
    while !accepted(deliver(&service, NEW).await) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_file(&file).unwrap();
    let started = Instant::now();
    while service.log_lines_with("reloading the credentials failed") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            service.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted(deliver(&service, NEW).await));
    assert!(service.log_text().contains("auth.webhook_token_file"));
    assert!(!service.log_text().contains(NEW), "a token in the log");
    assert!(service.running());
}
