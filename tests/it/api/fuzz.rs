//! Fuzzing the running service.
//!
//! - schemathesis (PyPI) generates requests from the served OpenAPI document, valid and invalid,
//!   and runs every check: no 5xx, every answer as documented, documented data accepted,
//!   undocumented data refused, auth enforced. On both stores, bounded in time.
//! - A property test posts alerts with arbitrary Unicode (NUL, astral characters written as
//!   surrogate-pair escapes, lone surrogates, huge values): never a 5xx while the store is up,
//!   and every valid alert is stored as sent (NUL replaced by U+FFFD).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use crate::support::app::*;

on_both_stores!(
    schemathesis_finds_nothing_with_every_check_on,
    arbitrary_unicode_never_gets_a_5xx_and_every_valid_alert_is_stored,
);

/// One token for the webhook, the API and the admin routes: schemathesis sends one header.
const TOKEN: &str = "fuzz-token-0d9c";

/// Where schemathesis's `st` is: `$SCHEMATHESIS`, the venv scripts/test.sh makes, or PATH.
fn schemathesis() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("SCHEMATHESIS") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
    {
        candidates.push(home.join("backup-remediator/venv/bin/st"));
    }
    candidates.push(PathBuf::from("st"));
    for c in candidates {
        let ok = Command::new(&c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return c;
        }
    }
    panic!(
        "schemathesis is not installed. Run the suite with scripts/test.sh (it installs it into \
         its venv), or: python3 -m venv ~/.cache/backup-remediator/venv && \
         ~/.cache/backup-remediator/venv/bin/pip install 'schemathesis>=4,<5' \
         (or set SCHEMATHESIS to an `st` binary)"
    );
}

pub async fn schemathesis_finds_nothing_with_every_check_on(backend: Backend) {
    let st = schemathesis();
    let app = spawn_app_with(
        backend,
        &format!(
            "[auth]\nwebhook_token = \"{TOKEN}\"\napi_token = \"{TOKEN}\"\nadmin_token = \"{TOKEN}\"\n\
             [target]\ndatabases = [\"link_users\"]\n"
        ),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let seed = std::env::var("FUZZ_SEED").unwrap_or_else(|_| "20261130".into());
    let mut child = tokio::process::Command::new(st)
        .current_dir(work.path())
        .args([
            "--no-color",
            "run",
            &format!("{}/api/v1/openapi.json", app.address),
            "--checks",
            "all",
            "--max-examples",
            "30",
            "-w",
            "1",
            "--seed",
            &seed,
            "--request-timeout",
            "10",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start schemathesis");
    let started = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut o, mut e) = (String::new(), String::new());
        let _ = tokio::join!(out.read_to_string(&mut o), err.read_to_string(&mut e));
        (o, e)
    };
    let ((stdout, stderr), status) = tokio::time::timeout(Duration::from_secs(240), async {
        (read.await, child.wait().await)
    })
    .await
    .unwrap_or_else(|_| panic!("schemathesis ran over 240 s"));
    let status = status.unwrap();
    println!("schemathesis ({backend:?}) took {:?}", started.elapsed());
    assert!(
        status.success(),
        "schemathesis found failures ({status}) on {backend:?}:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("passed") || stdout.contains("No issues found"),
        "schemathesis ran no test:\n{stdout}\n{stderr}"
    );
}

/// A string of any Unicode scalar values, NUL and astral ones included; sometimes huge.
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
        1 => (any::<char>(), 50_000usize..150_000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        1 => Just("\u{0}".to_owned()),
    ]
}

/// Key-value pairs, duplicates possible (as a sender may write them).
type Pairs = Vec<(String, String)>;

#[derive(Debug, Clone)]
struct Case {
    /// (alertname, labels, annotations, generatorURL) of each alert.
    alerts: Vec<(String, Pairs, Pairs, String)>,
    receiver: String,
    /// Write every non-ASCII character as a `\u` escape (astral ones as surrogate pairs).
    escape: bool,
    /// Put a lone surrogate escape into the body: invalid, must be a 400.
    lone_surrogate: bool,
}

fn cases() -> impl Strategy<Value = Case> {
    let labels = || {
        proptest::collection::vec(
            (
                any_text(12).prop_filter("a key", |k| !k.is_empty()),
                any_text(40),
            ),
            0..4,
        )
    };
    let alert = (
        prop_oneof![
            Just("PostgreSQLBackupFailed".to_owned()),
            any_text(20).prop_filter("a name", |n| !n.is_empty())
        ],
        labels(),
        labels(),
        any_text(40),
    );
    (
        proptest::collection::vec(alert, 1..4),
        any_text(20),
        any::<bool>(),
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(alerts, receiver, escape, lone_surrogate)| Case {
            alerts,
            receiver,
            escape,
            lone_surrogate,
        })
}

/// `\uXXXX` escapes for every non-ASCII character of a JSON text (strings hold all of them).
fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

fn stored(s: &str) -> String {
    s.replace('\u{0}', "\u{FFFD}")
}

pub async fn arbitrary_unicode_never_gets_a_5xx_and_every_valid_alert_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let serial = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&cases(), |case| {
        let n = serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let check = check_case(&app, &case, n);
        tokio::task::block_in_place(|| handle.block_on(check))
    });
    if let Err(e) = result {
        panic!("{backend:?}: {e}");
    }
}

async fn check_case(app: &TestApp, case: &Case, serial: u64) -> Result<(), TestCaseError> {
    let alerts: Vec<Value> = case
        .alerts
        .iter()
        .enumerate()
        .map(|(i, (name, labels, annotations, url))| {
            let mut l: serde_json::Map<String, Value> =
                labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            l.insert("alertname".into(), json!(name));
            let a: serde_json::Map<String, Value> = annotations
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({
                "status": "firing", "labels": l, "annotations": a,
                "startsAt": "2026-11-25T01:02:03.456Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": url, "fingerprint": format!("{serial:012x}{i:04x}"),
            })
        })
        .collect();
    let mut delivery = payload(alerts);
    delivery["receiver"] = json!(case.receiver);
    let mut body = delivery.to_string();
    if case.escape {
        body = escape_non_ascii(&body);
    }
    if case.lone_surrogate {
        body = body.replacen("\"receiver\":\"", "\"receiver\":\"\\ud800", 1);
    }
    let too_big = body.len() > 1024 * 1024;
    let name_too_long = case
        .alerts
        .iter()
        .any(|(name, ..)| name.chars().count() > 256);
    // Labels that differ only by NUL against U+FFFD collide once stored: that alert is not sent.
    let colliding = case.alerts.iter().any(|(_, labels, annotations, _)| {
        [labels, annotations].iter().any(|m| {
            let mut keys: Vec<String> = m.iter().map(|(k, _)| stored(k)).collect();
            keys.push("alertname".into());
            let n = keys.len();
            keys.sort();
            keys.dedup();
            keys.len() != n
        })
    });

    let resp = app
        .post_webhook_raw(body, Some(&format!("Bearer {WEBHOOK_TOKEN}")))
        .await;
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);

    prop_assert!(status < 500, "{status}: {answer}");
    if case.lone_surrogate || too_big || name_too_long || colliding {
        prop_assert!(
            status == 400 || status == 413 || (colliding && status == 202),
            "{status}: {answer}"
        );
        return Ok(());
    }
    prop_assert_eq!(status, 202, "{}", answer);
    for (i, (name, labels, annotations, url)) in case.alerts.iter().enumerate() {
        let result = &answer["alerts"][i];
        if name != "PostgreSQLBackupFailed" {
            prop_assert_eq!(&result["outcome"], "ignored");
            continue;
        }
        prop_assert_eq!(&result["outcome"], "opened", "{}", answer);
        let id = result["incident_id"].as_i64().unwrap();
        let incident = app.incident(id).await;
        for (k, v) in labels {
            if k != "alertname" {
                prop_assert_eq!(&incident["labels"][stored(k)], &json!(stored(v)));
            }
        }
        for (k, v) in annotations {
            prop_assert_eq!(&incident["annotations"][stored(k)], &json!(stored(v)));
        }
        prop_assert_eq!(&incident["generator_url"], &json!(stored(url)));
        prop_assert_eq!(
            &incident["timeline"][0]["detail"]["receiver"],
            &json!(stored(&case.receiver))
        );
    }
    Ok(())
}
