//! Slow and idle clients, with raw TCP against the running app: a client that sends nothing, one
//! that trickles its header, one that declares a body and never sends it, and one that goes
//! quiet are all closed in bounded time and counted; connections past the cap wait their turn;
//! every error answer is JSON.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::app::*;

const LIMITS: &str = "[server]\nheader_read_timeout_ms = 600\nbody_timeout_ms = 600\n\
                      idle_timeout_ms = 5000\nmax_connections = 512\n";

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent and
/// how long the close took, or `None` when it was still open at the limit.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(String, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((String::from_utf8_lossy(&got).into_owned(), start.elapsed()))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The value of `backup_remediator_http_connections_closed_total{reason}` now.
async fn closed_count(app: &TestApp, reason: &str) -> f64 {
    // A connection of its own, never pooled: these tests set idle timeouts short enough that a
    // kept-alive connection from the previous read can be closed by the server as it is reused.
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let text = once
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("backup_remediator_http_connections_closed_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_or_trickles_its_header_is_closed_and_counted() {
    let app = spawn_app_with(Backend::Sqlite, LIMITS).await;
    let before = closed_count(&app, "header_timeout").await;

    let silent = TcpStream::connect(host(&app)).await.unwrap();
    let mut trickling = Vec::new();
    for _ in 0..200 {
        trickling.push(TcpStream::connect(host(&app)).await.unwrap());
    }
    // A header byte every 0.25 s per connection, for up to 3 s, until the server hangs up.
    let head = b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
    let trickle = tokio::spawn(async move {
        let start = Instant::now();
        let mut open = trickling.len();
        let mut i = 0;
        while open > 0 && start.elapsed() < Duration::from_secs(3) {
            open = 0;
            for s in trickling.iter_mut() {
                if s.write_all(&head[i % head.len()..][..1]).await.is_ok() {
                    open += 1;
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut closed = 0;
        for mut s in trickling {
            if read_until_closed(&mut s, Duration::from_millis(500))
                .await
                .is_some()
            {
                closed += 1;
            }
        }
        closed
    });
    let mut silent = silent;
    let closed_silent = read_until_closed(&mut silent, Duration::from_secs(3)).await;

    let (_, after) = closed_silent.expect("a connection sending nothing is closed");
    assert!(after < Duration::from_secs(2), "closed after {after:?}");
    let closed = trickle.await.unwrap();
    assert_eq!(closed, 200, "every trickling connection is closed");
    assert!(
        closed_count(&app, "header_timeout").await - before >= 201.0,
        "each close is counted"
    );
    // The server still answers everyone else.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_that_never_comes_gets_a_json_408_and_the_connection_closes() {
    let app = spawn_app_with(Backend::Sqlite, LIMITS).await;
    let before = closed_count(&app, "body_timeout").await;

    for declared in [500_000usize, 10_000_000] {
        let mut s = TcpStream::connect(host(&app)).await.unwrap();
        let head = format!(
            "POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{"
        );
        s.write_all(head.as_bytes()).await.unwrap();

        let (answer, after) = read_until_closed(&mut s, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("a {declared}-byte body that never comes is held open"));

        assert!(
            after < Duration::from_secs(2),
            "{declared}: closed after {after:?}"
        );
        let status = answer.split(' ').nth(1).unwrap_or_default();
        assert!(["408", "413"].contains(&status), "{declared}: {answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(answer.contains("{\"error\":"), "{answer}");
    }
    assert!(closed_count(&app, "body_timeout").await - before >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_goes_quiet_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(
        Backend::Sqlite,
        "[server]\nheader_read_timeout_ms = 10000\nbody_timeout_ms = 10000\nidle_timeout_ms = 500\n",
    )
    .await;
    let before = closed_count(&app, "idle_timeout").await;
    let mut s = TcpStream::connect(host(&app)).await.unwrap();
    // Half a header, then silence: only the idle timeout can end this within a second.
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost:")
        .await
        .unwrap();

    let (_, after) = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("a quiet connection is closed");

    assert!(
        after < Duration::from_millis(2500),
        "closed after {after:?}"
    );
    assert!(closed_count(&app, "idle_timeout").await - before >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_is_free() {
    let app = spawn_app_with(
        Backend::Sqlite,
        "[server]\nheader_read_timeout_ms = 1500\nmax_connections = 3\n",
    )
    .await;
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(TcpStream::connect(host(&app)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut fourth = TcpStream::connect(host(&app)).await.unwrap();
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();

    let (answer, _) = read_until_closed(&mut fourth, Duration::from_secs(5))
        .await
        .expect("the fourth connection is served once the others time out");

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "served at once ({:?}): the cap of 3 did not hold",
        started.elapsed()
    );
    drop(holders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_answer_is_the_json_error_shape() {
    let app = spawn_app_with(
        Backend::Sqlite,
        "[auth]\nadmin_token = \"admin-t\"\n[server]\nbody_limit_bytes = 1024\n",
    )
    .await;
    let url = |p: &str| format!("{}{p}", app.address);

    let wrong_method = app.client.delete(url("/healthz")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.headers().contains_key("allow"));
    let too_big = app
        .client
        .post(url("/api/v1/backups"))
        .bearer_auth("admin-t")
        .body(vec![b' '; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert_eq!(
        too_big.headers()["connection"],
        "close",
        "the unread body ends the connection"
    );
    let missing = app.client.get(url("/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    for resp in [wrong_method, too_big, missing] {
        let status = resp.status();
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("application/json"), "{status}: {kind}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{status}: {body}"
        );
    }
}
