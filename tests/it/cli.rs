//! The real binary as an operator runs it: start-up checks, logs without secrets, SIGTERM, and
//! the `migrate` / `incidents` commands over the same store.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::approvals;

const BIN: &str = env!("CARGO_BIN_EXE_backup-remediator");
const CANARY_HOOK: &str = "canary-hook-4f9e1c";
const CANARY_API: &str = "canary-api-7d2b0a";

fn command(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    // Every BR_* variable of the test's own environment is configuration: start from none.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BR_") {
            c.env_remove(name);
        }
    }
    c
}

/// Waits up to `limit` for the child to exit; kills it and returns `None` if it does not.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn run(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().expect("run the binary")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A runtime for the async HTTP client in these synchronous tests.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A client and the base URL of a service on `port`.
fn client_for(port: u16) -> (reqwest::Client, String) {
    (reqwest::Client::new(), format!("http://127.0.0.1:{port}"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_refuses_to_start_without_credentials_and_says_which_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.webhook_token") && err.contains("--insecure-no-auth"),
        "{err}"
    );
}

#[test]
fn a_bad_config_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nbody_limit_bytes = \"lots\"\n",
    )
    .unwrap();
    let out = {
        // It would listen on the default port if the configuration were good.
        let _port = crate::support::DEFAULT_PORT.blocking_lock();
        run(
            dir.path(),
            &["--config", "bad.toml", "serve", "--insecure-no-auth"],
        )
    };
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("body_limit_bytes"), "{err}");

    let out = run(dir.path(), &["--config", "missing.toml", "migrate"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn the_service_logs_no_secret_stops_cleanly_on_sigterm_and_the_cli_reads_its_store() {
    let dir = tempfile::tempdir().unwrap();
    // Probes would look for the production Prometheus, cluster and database; this test is about
    // the process, so it records incidents without diagnosing them.
    std::fs::write(dir.path().join("quiet.toml"), "[probes]\nenabled = []\n").unwrap();
    let port = free_port();
    let mut child = command(dir.path())
        .args([
            "--config",
            "quiet.toml",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("BR_WEBHOOK_TOKEN", CANARY_HOOK)
        .env("BR_API_TOKEN", CANARY_API)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let pid = child.id();
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let server = Server(child);

    runtime().block_on(async {
        let (client, base) = client_for(port);
        let deadline = Instant::now() + Duration::from_secs(15);
        while client.get(format!("{base}/readyz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let body = serde_json::json!({
            "version": "4", "status": "firing", "receiver": "r", "groupKey": "{}:{}",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical"},
                "annotations": {}, "startsAt": "2026-11-25T01:02:03.456Z",
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "0123456789abcdef"
            }]
        });
        let ok = client.post(format!("{base}/webhook/alertmanager")).bearer_auth(CANARY_HOOK).json(&body).send().await.unwrap();
        assert_eq!(ok.status(), 202);
        let wrong = client
            .post(format!("{base}/webhook/alertmanager"))
            .bearer_auth(format!("{CANARY_HOOK}-wrong"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        let list = client.get(format!("{base}/api/v1/incidents")).bearer_auth(CANARY_API).send().await.unwrap();
        let text = list.text().await.unwrap();
        assert!(text.contains("0123456789abcdef") && !text.contains("canary"), "{text}");
    });

    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).unwrap();
    stdout.read_to_string(&mut logs).unwrap();
    assert!(
        logs.contains("\"stopped\""),
        "graceful shutdown is logged:\n{logs}"
    );
    assert!(
        logs.contains("incident opened"),
        "JSON logs carry the events:\n{logs}"
    );
    assert!(
        !logs.contains("canary"),
        "a token reached the logs:\n{logs}"
    );
    assert!(
        !logs.to_lowercase().contains("authorization"),
        "a header reached the logs"
    );

    // The CLI reads the same embedded store the service wrote (./data under the working dir).
    let list = run(dir.path(), &["incidents", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(
        table.contains("PostgreSQLBackupFailed") && table.contains("open"),
        "{table}"
    );
    let show = run(dir.path(), &["incidents", "show", "1", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&show.stdout).expect("show --json prints JSON");
    assert_eq!(v["fingerprint"], "0123456789abcdef");
    assert_eq!(v["timeline"][0]["kind"], "opened");
    let missing = run(dir.path(), &["incidents", "show", "42"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no incident with id 42"));
}

#[test]
fn an_unknown_br_variable_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, said) in [
        ("BR_SERVER__LISTN", "127.0.0.1:0", "BR_SERVER__LISTN"),
        ("BR_SERVE__LISTEN", "127.0.0.1:0", "BR_SERVE__LISTEN"),
        // One underscore sets nothing: refused with the name that would have worked.
        ("BR_SERVER_LISTEN", "127.0.0.1:0", "BR_SERVER__LISTEN"),
        (
            "BR_SERVER__BODY_LIMIT_BYTES",
            "big",
            "BR_SERVER__BODY_LIMIT_BYTES",
        ),
    ] {
        let mut child = command(dir.path())
            .args(["serve", "--insecure-no-auth", "--listen", "127.0.0.1:0"])
            .env(var, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let status = exit_within(&mut child, Duration::from_secs(10));
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            matches!(status, Some(s) if !s.success()),
            "{var}={value}: start-up went on ({status:?}): {err}"
        );
        assert!(err.contains(said), "{var}: the error names {said}: {err}");
    }
}

#[test]
fn the_br_server_listen_variable_decides_where_the_binary_listens() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = command(dir.path())
        .args(["serve"])
        .env("BR_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("BR_PROBES__ENABLED", "")
        .env("BR_WEBHOOK_TOKEN", CANARY_HOOK)
        .env("BR_API_TOKEN", CANARY_API)
        .env("BR_SERVER__BODY_LIMIT_BYTES", "2048")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut server = Server(child);
    runtime().block_on(async {
        let (client, base) = client_for(port);
        let deadline = Instant::now() + Duration::from_secs(15);
        while client.get(format!("{base}/readyz")).send().await.is_err() {
            if let Some(status) = server.0.try_wait().unwrap() {
                let mut err = String::new();
                server
                    .0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("the service exited ({status}): {err}");
            }
            assert!(
                Instant::now() < deadline,
                "nothing listens on 127.0.0.1:{port}: BR_SERVER__LISTEN was ignored"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The other variables were applied too: the API wants BR_API_TOKEN, the limit is 2 KiB.
        let list = client
            .get(format!("{base}/api/v1/incidents"))
            .bearer_auth(CANARY_API)
            .send()
            .await
            .unwrap();
        assert_eq!(list.status(), 200);
        let big = client
            .post(format!("{base}/webhook/alertmanager"))
            .bearer_auth(CANARY_HOOK)
            .header("content-type", "application/json")
            .body(vec![b' '; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(
            big.status(),
            413,
            "BR_SERVER__BODY_LIMIT_BYTES=2048 applies"
        );
    });
}

#[test]
fn migrate_creates_the_embedded_store_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = run(dir.path(), &["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied (sqlite)"));
    }
    assert!(dir.path().join("data/backup-remediator.sqlite").is_file());
}

#[test]
fn replay_and_probe_print_findings_and_a_diagnosis_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    // Only the database probe, pointed at a port where nothing listens.
    std::fs::write(
        dir.path().join("replay.toml"),
        format!("[probes]\nenabled = [\"database\"]\ndeadline_ms = 3000\n[target]\nhost = \"127.0.0.1\"\nport = {closed}\n"),
    )
    .unwrap();
    let alert = r#"{"version":"4","status":"firing","receiver":"r","groupKey":"{}:{}","alerts":[{"status":"firing",
        "labels":{"alertname":"PostgreSQLBackupFailed"},"annotations":{},"startsAt":"2026-11-25T01:02:03Z",
        "endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"0123456789abcdef"}]}"#;
    std::fs::write(dir.path().join("alert.json"), alert).unwrap();

    let out = run(
        dir.path(),
        &["--config", "replay.toml", "replay", "alert.json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("PostgreSQLBackupFailed (firing) fingerprint 0123456789abcdef"),
        "{report}"
    );
    assert!(
        report.contains("PROBLEM  database") && report.contains("refused the connection"),
        "{report}"
    );
    assert!(
        report.contains("DIAGNOSIS  scenario 1, database connection"),
        "{report}"
    );
    assert!(
        report.contains("plan (policy: built-in (no policy file: dry run); nothing was run)"),
        "{report}"
    );
    assert!(
        report.contains("restart_primary") && report.contains("dry_run"),
        "the plan names the approval-only restart: {report}"
    );

    let out = run(
        dir.path(),
        &["--config", "replay.toml", "replay", "alert.json", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["diagnosis"]["scenario"], "database_connection");
    assert_eq!(v["findings"][0]["signals"][0]["failure"], "refused");
    assert_eq!(v["plan"][0]["name"], "database_answers");
    assert!(v["plan"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "restart_primary"));

    let out = run(
        dir.path(),
        &["--config", "replay.toml", "probe", "database", "--json"],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("probe --json prints JSON");
    assert_eq!(v[0]["probe"], "database");
    let bad = run(dir.path(), &["probe", "nonsense"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown probe \"nonsense\""));
    let not_alert = run(dir.path(), &["replay", "replay.toml"]);
    assert!(!not_alert.status.success());
    assert!(String::from_utf8_lossy(&not_alert.stderr).contains("is not an Alertmanager payload"));

    assert!(
        !dir.path().join("data").exists(),
        "replay and probe open no store"
    );
}

const CANARY_ADMIN: &str = "canary-admin-31c9e8";

/// Runs `incidents approve|reject` as an operator does, with `BR_ADMIN_TOKEN` = `token`.
fn decide(dir: &Path, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut c = command(dir);
    c.args(args).env("USER", "opsuser");
    if let Some(t) = token {
        c.env("BR_ADMIN_TOKEN", t);
    }
    let out = c.output().expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn incidents_approve_and_reject_decide_through_the_running_service_with_clear_refusals() {
    // Arrange: the real service on its embedded store, an incident with two steps waiting.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = command(dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("BR_PROBES__ENABLED", "")
        .env("BR_WEBHOOK_TOKEN", CANARY_HOOK)
        .env("BR_API_TOKEN", CANARY_API)
        .env("BR_ADMIN_TOKEN", CANARY_ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let _server = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    let rt = runtime();
    let store_url = format!(
        "sqlite:{}",
        dir.path().join("data/backup-remediator.sqlite").display()
    );
    let (store, id, steps) = rt.block_on(async {
        let (client, _) = client_for(port);
        let deadline = Instant::now() + Duration::from_secs(15);
        while client.get(format!("{base}/readyz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let opts = backup_remediator::store::StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(3),
        };
        let store = backup_remediator::store::Store::connect(&store_url, Path::new(""), &opts)
            .await
            .unwrap();
        let (id, steps) =
            approvals::waiting_for_approval(&store, &["restart_primary", "expand_pvc"]).await;
        (store, id, steps)
    });
    let (id_s, restart, expand) = (id.to_string(), steps[0].to_string(), steps[1].to_string());

    // Act / Assert: approve as a named person, with a comment.
    let approve = [
        "incidents",
        "approve",
        &id_s,
        &restart,
        "--url",
        &base,
        "--actor",
        "jane@example.com",
        "--comment",
        "primary checked",
    ];
    let (code, out, err) = decide(dir.path(), Some(CANARY_ADMIN), &approve);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "approved action {restart} (restart_primary on {}) of incident {id}",
            approvals::TARGET
        )) && out.contains("decided by admin, on behalf of jane@example.com"),
        "{out}"
    );
    // Twice: the server's reason, exit code 6.
    let (code, _, err) = decide(dir.path(), Some(CANARY_ADMIN), &approve);
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("409 conflict") && err.contains("already decided by admin"),
        "{err}"
    );
    // Reject without --actor: the token's name decides, on behalf of the OS user.
    let (code, out, err) = decide(
        dir.path(),
        Some(CANARY_ADMIN),
        &[
            "incidents",
            "reject",
            &id_s,
            &expand,
            "--url",
            &base,
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let step: serde_json::Value = serde_json::from_str(&out).expect("--json prints the step");
    assert_eq!(step["state"], "rejected");
    assert_eq!(step["decided_by"], "admin", "{step}");
    // A wrong token, no token, an unknown incident, a service that is not there.
    let (code, _, err) = decide(dir.path(), Some("not-the-token"), &approve);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("401") && err.contains("BR_ADMIN_TOKEN"),
        "{err}"
    );
    let (code, _, err) = decide(dir.path(), None, &approve);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("BR_ADMIN_TOKEN is not set"), "{err}");
    let (code, _, err) = decide(
        dir.path(),
        Some(CANARY_ADMIN),
        &["incidents", "approve", "999", &restart, "--url", &base],
    );
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("404") && err.contains("incident 999"), "{err}");
    let down = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = decide(
        dir.path(),
        Some(CANARY_ADMIN),
        &["incidents", "approve", &id_s, &restart, "--url", &down],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(!err.contains(CANARY_ADMIN));
    // A service with no admin token configured refuses every decision (403) and says why.
    let closed_dir = tempfile::tempdir().unwrap();
    let closed_port = free_port();
    let closed = command(closed_dir.path())
        .args(["serve", "--listen", &format!("127.0.0.1:{closed_port}")])
        .env("BR_PROBES__ENABLED", "")
        .env("BR_WEBHOOK_TOKEN", CANARY_HOOK)
        .env("BR_API_TOKEN", CANARY_API)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serve");
    let _closed = Server(closed);
    let closed_url = format!("http://127.0.0.1:{closed_port}");
    rt.block_on(async {
        let (client, _) = client_for(closed_port);
        let deadline = Instant::now() + Duration::from_secs(15);
        while client
            .get(format!("{closed_url}/readyz"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (code, _, err) = decide(
        dir.path(),
        Some(CANARY_ADMIN),
        &["incidents", "approve", "1", "1", "--url", &closed_url],
    );
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("403 forbidden") && err.contains("no admin credential is configured"),
        "{err}"
    );

    // The store holds both decisions, by whom, with the comment on the timeline.
    rt.block_on(async {
        let steps = store.steps(id).await.unwrap();
        assert_eq!(steps[0].state.as_str(), "approved");
        // Who decided is the credential's name; the --actor is the note next to it.
        assert_eq!(steps[0].decided_by.as_deref(), Some("admin"));
        assert_eq!(steps[1].state.as_str(), "rejected");
        let timeline = store.timeline(id).await.unwrap();
        let approved = timeline.iter().find(|e| e.kind == "approved").unwrap();
        assert_eq!(approved.detail["comment"], "primary checked");
        assert_eq!(approved.detail["by"], "admin");
        assert_eq!(approved.detail["role"], "admin");
        assert_eq!(approved.detail["on_behalf_of"], "jane@example.com");
        let rejected = timeline.iter().find(|e| e.kind == "rejected").unwrap();
        assert_eq!(rejected.detail["on_behalf_of"], "opsuser");
        store.close().await;
    });
}
