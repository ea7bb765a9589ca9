//! Decrypt + restore throughput: the service's pipeline (streaming decryption in process, piped
//! into the real `pg_restore`, with `pg_restore --list` fed alongside) against the shell's
//! `openssl enc -d … | pg_restore`, on the same encrypted backup in the same run, and the
//! service pipeline's peak memory (VmHWM of a child process that runs only the pipeline).
//!
//! Needs the local PostgreSQL (127.0.0.1:5432, trust auth; `TEST_DATABASE_URL` to change),
//! `pg_dump`, `pg_restore` and `openssl`. Sizes: `BR_BENCH_RESTORE_MB` (default 300) of table
//! data, and a small run of `BR_BENCH_SMALL_MB` (default 30) to show memory does not grow with
//! size. `BR_BENCH_COMPRESS` (default 0) is pg_dump's --compress.
//!
//! `cargo bench --bench restore`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_remediator::runbook::restore::{
    restore_stream, scratch_name, PgTarget, RestoreInto, ScratchDb,
};
use secrecy::SecretString;
use sqlx::{Connection, Executor};

const KEY: &str = "bench-encryption-key-0123456789abcdef";
const CHILD: &str = "BR_BENCH_RESTORE_CHILD";

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target() -> PgTarget {
    PgTarget::parse(&SecretString::from(admin_url())).expect("TEST_DATABASE_URL")
}

/// The child: runs only the pipeline from the encrypted file into `db`, prints
/// `<seconds> <archive bytes> <VmHWM kB>`.
fn child(file: &str, db: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (secs, archive) = rt.block_on(async {
        let into = RestoreInto {
            program: "pg_restore".into(),
            target: target(),
            database: db.to_owned(),
        };
        let f = tokio::fs::File::open(file).await.unwrap();
        let len = f.metadata().await.unwrap().len();
        let start = Instant::now();
        let report = restore_stream(f, Some(len), KEY.as_bytes(), &into)
            .await
            .unwrap_or_else(|p| panic!("the pipeline failed: {}", p.reason));
        (start.elapsed().as_secs_f64(), report.archive_bytes)
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().to_owned())
        .unwrap_or_default();
    println!("{secs} {archive} {hwm}");
}

/// Creates a database with about `mb` MB of rows, dumps and encrypts it; returns the file.
async fn make_backup(dir: &Path, mb: u64, compress: u64) -> PathBuf {
    let t = target();
    let src = scratch_name("br_bench_src", &format!("{mb}mb"));
    let mut admin = sqlx::postgres::PgConnection::connect_with(&t.options(&t.maintenance_db))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is not reachable ({e}): start it (scripts/test.sh does)",
                admin_url()
            )
        });
    admin
        .execute(format!("CREATE DATABASE {src}").as_str())
        .await
        .unwrap();
    let mut c = sqlx::postgres::PgConnection::connect_with(&t.options(&src))
        .await
        .unwrap();
    // ~170 bytes a row on disk in the dump; three tables, one with an index.
    let rows = mb * 1_000_000 / 170;
    let started = Instant::now();
    c.execute(
        format!(
            "CREATE TABLE events (id bigint PRIMARY KEY, account int, kind text, payload text, at timestamptz);
             INSERT INTO events SELECT g, g % 9973, 'kind-' || (g % 17), md5(g::text) || md5((g * 7)::text) || repeat('p', 60), now() - g * interval '1 second'
               FROM generate_series(1, {rows}) g;
             CREATE TABLE accounts AS SELECT g AS id, 'user' || g || '@example.com' AS email FROM generate_series(1, 9973) g;
             CREATE TABLE empty_audit (at timestamptz);"
        )
        .as_str(),
    )
    .await
    .unwrap();
    c.close().await.ok();
    eprintln!(
        "  generated {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let dump = dir.join(format!("{src}.dump"));
    let base = admin_url().rsplit_once('/').unwrap().0.to_owned();
    let ok = Command::new("pg_dump")
        .args(["--format=custom", &format!("--compress={compress}"), "-f"])
        .arg(&dump)
        .arg(format!("{base}/{src}"))
        .status()
        .expect("pg_dump");
    assert!(ok.success());
    let enc = dir.join(format!("{src}.dump.enc"));
    let ok = Command::new("openssl")
        .args([
            "enc",
            "-aes-256-cbc",
            "-salt",
            "-pbkdf2",
            "-iter",
            "100000",
            "-in",
        ])
        .arg(&dump)
        .arg("-out")
        .arg(&enc)
        .args(["-pass", "env:BR_BENCH_KEY"])
        .env("BR_BENCH_KEY", KEY)
        .status()
        .expect("openssl");
    assert!(ok.success());
    std::fs::remove_file(&dump).ok();
    admin
        .execute(format!("DROP DATABASE {src} WITH (FORCE)").as_str())
        .await
        .unwrap();
    enc
}

/// `openssl enc -d … | pg_restore` in the shell, into a fresh scratch database.
async fn shell(enc: &Path) -> f64 {
    let t = target();
    let db = ScratchDb::create(&t, &scratch_name("br_bench", "shell"))
        .await
        .unwrap();
    let base = admin_url().rsplit_once('/').unwrap().0.to_owned();
    let script = format!(
        "set -e -o pipefail; openssl enc -d -aes-256-cbc -pbkdf2 -iter 100000 -pass env:BR_BENCH_KEY -in '{}' \
         | pg_restore --no-owner --no-privileges -d '{base}/{}'",
        enc.display(),
        db.name
    );
    let start = Instant::now();
    let ok = Command::new("bash")
        .args(["-c", &script])
        .env("BR_BENCH_KEY", KEY)
        .status()
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(ok.success(), "the shell pipeline failed");
    db.drop_now().await.unwrap();
    secs
}

/// The service's pipeline in a child process: (seconds, peak memory in kB).
async fn service(enc: &Path) -> (f64, u64) {
    let t = target();
    let db = ScratchDb::create(&t, &scratch_name("br_bench", "service"))
        .await
        .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, "1")
        .env("BR_BENCH_FILE", enc)
        .env("BR_BENCH_DB", &db.name)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    db.drop_now().await.unwrap();
    assert!(out.status.success(), "the service pipeline failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default().to_owned();
    let mut parts = line.split_whitespace();
    let secs: f64 = parts.next().and_then(|s| s.parse().ok()).expect("seconds");
    let _archive: u64 = parts.next().and_then(|s| s.parse().ok()).expect("bytes");
    let hwm: u64 = parts.next().and_then(|s| s.parse().ok()).expect("VmHWM");
    (secs, hwm)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        let file = std::env::var("BR_BENCH_FILE").unwrap();
        let db = std::env::var("BR_BENCH_DB").unwrap();
        child(&file, &db);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("restore: benchmark");
        return;
    }
    let big = env_num("BR_BENCH_RESTORE_MB", 300);
    let small = env_num("BR_BENCH_SMALL_MB", 30);
    let compress = env_num("BR_BENCH_COMPRESS", 0);
    let rounds = env_num("BR_BENCH_ROUNDS", 2).max(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        for mb in [small, big] {
            eprintln!("backup of ~{mb} MB of rows (pg_dump --compress={compress}):");
            let enc = make_backup(dir.path(), mb, compress).await;
            let size = std::fs::metadata(&enc).unwrap().len() as f64 / 1e6;
            let (mut shells, mut services, mut peak) = (Vec::new(), Vec::new(), 0);
            for _ in 0..rounds {
                // Alternate, so that neither side always gets the warmer cache.
                shells.push(shell(&enc).await);
                let (secs, hwm) = service(&enc).await;
                services.push(secs);
                peak = peak.max(hwm);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (sh, sv) = (median(shells), median(services));
            println!(
                "restore {size:.0} MB encrypted: service {:.1} MB/s ({sv:.2} s), shell openssl|pg_restore {:.1} MB/s ({sh:.2} s), ratio {:.2} (target >= 0.90), service peak memory {:.1} MiB (target < 64)",
                size / sv,
                size / sh,
                sh / sv,
                peak as f64 / 1024.0
            );
            std::fs::remove_file(&enc).ok();
        }
    });
}
