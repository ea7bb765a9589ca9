//! What one listing of the backup prefix costs with 100 000 keys under it: ListObjectsV2
//! requests, wall time, and the listing's peak heap (a counting allocator in this binary) and
//! what the finished listing keeps. Against moto on loopback, started from
//! `tests/it/support/aging_moto.py`, whose `/_test/fill` stores the keys at once.
//!
//! Needs moto (`$MOTO_SERVER` or `moto_server` on PATH; its interpreter is `$MOTO_PYTHON`, else
//! the `python3` beside it). Keys: `BR_BENCH_LIST_KEYS` (default 100 000); runs:
//! `BR_BENCH_LIST_RUNS` (default 3).
//!
//! `cargo bench --bench listing`

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use backup_remediator::config::Settings;
use backup_remediator::infra::aws::{s3_client, Limits};
use backup_remediator::infra::s3::list_backups;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BUCKET: &str = "bench-backups";
const PREFIX: &str = "postgres-backups/";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// moto's launcher with the fill route, on `port`.
fn start_moto(port: u16) -> Child {
    let server = std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("moto_server"));
    let python = std::env::var_os("MOTO_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let beside = server.parent()?.join("python3");
            beside.is_file().then_some(beside)
        })
        .unwrap_or_else(|| PathBuf::from("python3"));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/aging_moto.py"
    );
    Command::new(python)
        .args([script, "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto (see the module documentation)")
}

fn main() {
    backup_remediator::install_crypto_provider();
    let keys = env_num("BR_BENCH_LIST_KEYS", 100_000);
    let runs = env_num("BR_BENCH_LIST_RUNS", 3);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut moto = start_moto(port);
    let url = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..300 {
            if http.get(format!("{url}/moto-api/")).send().await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "moto did not start at {url}");
        let settings = Settings::from_toml(&format!(
            "[s3]\nendpoint = \"{url}\"\nforce_path_style = true\nregion = \"us-east-1\"\n"
        ))
        .unwrap();
        let client = s3_client(
            &settings.s3,
            Credentials::new("AKIAIOSFODNN7EXAMPLE", "bench", None, None, "bench"),
            Limits::for_deadline(Duration::from_secs(30)),
        );
        client.create_bucket().bucket(BUCKET).send().await.unwrap();
        let started = Instant::now();
        let filled = http
            .post(format!("{url}/_test/fill"))
            .query(&[
                ("bucket", BUCKET),
                ("prefix", PREFIX),
                ("n", &keys.to_string()),
            ])
            .send()
            .await
            .unwrap();
        assert!(filled.status().is_success(), "fill: {}", filled.status());
        println!(
            "{keys} keys stored in moto in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for run in 1..=runs {
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let started = Instant::now();
            let listing = list_backups(&client, BUCKET, PREFIX).await.unwrap();
            let took = started.elapsed();
            let peak = PEAK.load(Ordering::Relaxed) - before;
            let kept = LIVE.load(Ordering::Relaxed).saturating_sub(before);
            assert!(listing.complete(), "{:?}", listing.cut);
            assert_eq!(listing.backups.len(), keys);
            println!(
                "run {run}: {} keys, {} ListObjectsV2 requests, {:.2} s ({:.1} ms per request), \
                 peak heap during the listing {:.1} MB, kept by the listing {:.1} MB",
                listing.keys,
                listing.pages,
                took.as_secs_f64(),
                took.as_secs_f64() * 1000.0 / f64::from(listing.pages.max(1)),
                peak as f64 / 1e6,
                kept as f64 / 1e6,
            );
            drop(listing);
        }
    });
    let _ = moto.kill();
    let _ = moto.wait();
}
