//! The restore test with real parts: databases on the real PostgreSQL, dumped by the real
//! `pg_dump -Fc` and encrypted by the real `openssl enc` exactly as the runbook's job does,
//! uploaded to moto's real S3; the backup Secret served by the stand-in Kubernetes API. The
//! service downloads, decrypts and restores with the real `pg_restore` into a scratch database
//! on the same PostgreSQL, and that database must be gone afterwards whatever happened.
//! Also: the manual backup Job's script, run by a real `sh` with the real pg_dump and openssl
//! (only `aws` stood in by a copy), makes backups this restore test restores.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::domain::restore_test::{RestoreTest, TestStatus, NOT_RESTORABLE_ALERT};
use backup_remediator::runbook::manual_backup::{self, BackupPlan};
use backup_remediator::runbook::restore::{
    incident_fingerprint, RestoreTester, StartError, TestRequest,
};
use backup_remediator::store::{Store, StoreOptions};
use sqlx::Connection;

use crate::support::cluster::{self, fixtures as fx, TestNamespace};
use crate::support::moto;
use crate::support::{backup, pg};
use moto::{admin_credentials, Moto};
use pg::{admin_on, admin_url, Scratch};

const BUCKET: &str = "link-backups";
const KEY: &str = "restore-test-key-0123456789abcdef-canary";
const CANARY_PASSWORD: &str = "canary-db-password-5c1f";

/// Everything one test needs, cleaned up when dropped.
struct World {
    moto: Moto,
    /// The backup Secret's namespace in the test cluster.
    ns: TestNamespace,
    /// The service's ServiceAccount.
    kube: kube::Client,
    db: Scratch,
    store: Store,
    scratch_prefix: String,
    _dir: tempfile::TempDir,
}

/// Fills `db` with four tables (one with a space in its name, one empty) and returns the rows
/// each should have.
async fn seed(db: &Scratch, name: &str) -> Vec<(&'static str, i64)> {
    db.sql(
        name,
        "CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
         INSERT INTO accounts (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, 120) g;
         CREATE TABLE orders (id bigserial PRIMARY KEY, account_id int REFERENCES accounts (id), total numeric);
         INSERT INTO orders (account_id, total) SELECT 1 + g % 120, g * 1.5 FROM generate_series(1, 2500) g;
         CREATE TABLE \"order lines\" (order_id bigint REFERENCES orders (id), sku text);
         INSERT INTO \"order lines\" SELECT g, 'sku-' || g FROM generate_series(1, 7) g;
         CREATE TABLE audit_empty (at timestamptz);",
    )
    .await;
    vec![
        ("public.accounts", 120),
        ("public.orders", 2500),
        ("public.order lines", 7),
        ("public.audit_empty", 0),
    ]
}

/// `pg_dump -Fc` of `db`, then `openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 -k KEY`,
/// the runbook's commands.
fn runbook_backup(dir: &Path, db: &str, key: &str) -> Vec<u8> {
    backup::openssl_encrypt(&pg_dump_custom(dir, db), key)
}

/// `pg_dump -Fc` of `db` into a file of `dir`, as the backup job runs it.
fn pg_dump_custom(dir: &Path, db: &str) -> std::path::PathBuf {
    let dump = dir.join(format!("{db}.sql"));
    let url = admin_url();
    let base = url.rsplit_once('/').unwrap().0;
    let out = Command::new("pg_dump")
        .args([
            "--format=custom",
            "--compress=6",
            "--clean",
            "--if-exists",
            "-f",
        ])
        .arg(&dump)
        .arg(format!("{base}/{db}"))
        .output()
        .expect("pg_dump is installed (scripts/test.sh installs PostgreSQL)");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dump
}

async fn world(secret_key: &str) -> World {
    world_on(Moto::start().await, secret_key).await
}

/// [`world`] on `moto`.
async fn world_on(moto: Moto, secret_key: &str) -> World {
    moto.create_bucket(BUCKET).await;
    let ns = cluster::shared().await.namespace().await;
    let creds = admin_credentials();
    ns.put(fx::secret(&[
        ("postgres-user", "backup_user"),
        ("postgres-password", CANARY_PASSWORD),
        ("s3-bucket", BUCKET),
        ("encryption-key", secret_key),
        ("aws-access-key-id", creds.access_key_id()),
        ("aws-secret-access-key", creds.secret_access_key()),
    ]))
    .await;
    let kube = ns.as_service().await;
    let db = Scratch::create(&["link_users"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(
        &format!("sqlite:{}", dir.path().join("store.sqlite").display()),
        Path::new(""),
        &StoreOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(3),
        },
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let scratch_prefix = format!("brt{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    World {
        moto,
        ns,
        kube,
        db,
        store,
        scratch_prefix,
        _dir: dir,
    }
}

impl World {
    fn database(&self) -> &str {
        &self.db.dbs[0]
    }

    fn settings(&self, extra: &str) -> Settings {
        self.moto.settings(&format!(
            "[kubernetes]\n{kube}\
             [target]\nhost = \"127.0.0.1\"\nport = 5432\ndatabases = [\"{db}\", \"link_chat\"]\n\
             [restore_test]\ntarget_url = \"{url}\"\nscratch_prefix = \"{prefix}\"\ntimeout_seconds = 120\n\
             {superuser}{extra}",
            kube = self.ns.kubernetes_toml(),
            db = self.database(),
            url = admin_url(),
            prefix = self.scratch_prefix,
            // The suite's scratch server is reached as its superuser, allowed here on purpose.
            superuser = if extra.contains("allow_superuser") {
                ""
            } else {
                "allow_superuser = true\n"
            },
        ))
    }

    fn tester(&self, extra: &str) -> RestoreTester {
        RestoreTester::new(
            Arc::new(self.settings(extra)),
            self.store.clone(),
            Some(self.kube.clone()),
        )
    }

    /// Runs the restore test of this world's database (or of `object`).
    async fn restore_test(&self, object: Option<&str>) -> RestoreTest {
        self.restore_test_with(object, "").await
    }

    /// Runs the restore test with `extra` settings under `[restore_test]`.
    async fn restore_test_with(&self, object: Option<&str>, extra: &str) -> RestoreTest {
        let tester = self.tester(extra);
        let started = tester
            .start(&request(Some(self.database()), object), None)
            .await
            .expect("the test starts");
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].result.status, TestStatus::Running);
        let done = tokio::time::timeout(Duration::from_secs(120), tester.run(started))
            .await
            .expect("the restore test finishes within 2 minutes");
        done.into_iter().next().unwrap()
    }

    /// How many restore tests the store holds.
    async fn tests_recorded(&self) -> usize {
        self.store.list_restore_tests(None, 10).await.unwrap().len()
    }

    /// Scratch databases of this world still on the server.
    async fn scratch_left(&self) -> Vec<String> {
        let mut c = admin_on("postgres").await;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1 || '%'")
                .bind(&self.scratch_prefix)
                .fetch_all(&mut c)
                .await
                .unwrap();
        c.close().await.ok();
        names
    }

    async fn backup_of(&self, key: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let bytes = runbook_backup(dir.path(), self.database(), key);
        bytes
    }
}

/// A request of the test harness for `database` (all when `None`), optionally one `object`.
fn request(database: Option<&str>, object: Option<&str>) -> TestRequest {
    TestRequest {
        database: database.map(str::to_owned),
        object: object.map(str::to_owned),
        trigger: "test".into(),
        actor: "tester".into(),
    }
}

fn object_key(db: &str, stamp: &str) -> String {
    format!("postgres-backups/postgres-backup-{stamp}_{db}.sql.enc")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_backup_restores_with_every_announced_table_and_its_rows() {
    let w = world(KEY).await;
    let expected = seed(&w.db, w.database()).await;
    let backup = w.backup_of(KEY).await;
    // An older backup of the same database that would not restore, and one of another database.
    let older = object_key(w.database(), "20261124_020000");
    w.moto
        .put(BUCKET, &older, b"Salted__garbage-garbage".to_vec())
        .await;
    w.moto
        .put(
            BUCKET,
            &object_key("link_chat", "20261125_020000"),
            b"x".to_vec(),
        )
        .await;
    let newest = object_key(w.database(), "20261125_020000");
    w.moto.put(BUCKET, &newest, backup.clone()).await;

    let t = w.restore_test(None).await;

    assert_eq!(
        t.result.status,
        TestStatus::Passed,
        "{:?}: {:#}",
        t.result.reason,
        t.result.detail
    );
    assert_eq!(t.result.object_key.as_deref(), Some(newest.as_str()));
    assert_eq!(t.result.tables_expected, Some(4));
    assert_eq!(t.result.tables_restored, Some(4));
    assert_eq!(t.result.table_data_expected, Some(4));
    assert_eq!(t.result.rows_restored, Some(120 + 2500 + 7));
    for (table, rows) in expected {
        assert_eq!(
            t.result.detail["rows"][table], rows,
            "{table}: {:#}",
            t.result.detail
        );
    }
    assert_eq!(t.result.object_bytes, Some(backup.len() as i64));
    assert!(
        t.result.archive_bytes.unwrap() > 0
            && t.result.archive_bytes.unwrap() < backup.len() as i64
    );
    assert_eq!(t.result.detail["scratch_dropped"], true);
    assert!(t.scratch_database.starts_with(&w.scratch_prefix));
    assert_eq!(w.scratch_left().await, Vec::<String>::new());
    assert_eq!(t.incident_id, None);
    let stored = w.store.get_restore_test(t.id).await.unwrap().unwrap();
    assert_eq!(stored, t);
    let shown = serde_json::to_string(&stored).unwrap();
    assert!(
        !shown.contains(KEY) && !shown.contains(CANARY_PASSWORD),
        "{shown}"
    );
}

/// Runs a restore test of `object` and checks what every failure must have: `failed`, a reason
/// containing `words`, the scratch database gone, and a NotRestorable incident with the reason.
async fn assert_not_restorable(w: &World, object: &str, words: &[&str]) -> RestoreTest {
    let t = w.restore_test(Some(object)).await;
    assert_eq!(t.result.status, TestStatus::Failed, "{:?}", t.result.reason);
    let reason = t.result.reason.clone().unwrap();
    assert!(
        words.iter().any(|w| reason.contains(w)),
        "reason {reason:?} should say one of {words:?}"
    );
    assert!(!reason.contains(KEY), "{reason}");
    eprintln!("reason: {reason}");
    assert_eq!(
        w.scratch_left().await,
        Vec::<String>::new(),
        "scratch database left behind"
    );
    let id = t.incident_id.expect("a failed test opens an incident");
    let incident = w.store.get_incident(id).await.unwrap().unwrap();
    assert_eq!(incident.alertname, NOT_RESTORABLE_ALERT);
    assert_eq!(incident.fingerprint, incident_fingerprint(w.database()));
    assert_eq!(incident.starts_at, t.started_at);
    assert_eq!(incident.labels["database"], w.database());
    assert_eq!(
        incident.status,
        backup_remediator::domain::incident::IncidentStatus::Escalated,
        "a backup that does not restore goes to people at once"
    );
    let timeline = w.store.timeline(id).await.unwrap();
    let event = timeline
        .iter()
        .find(|e| e.kind == "restore_test_failed")
        .expect("restore_test_failed event");
    assert_eq!(event.detail["reason"], reason.as_str());
    assert_eq!(event.detail["restore_test_id"], t.id);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_object_fails_with_a_clear_reason_and_leaves_no_scratch_database() {
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    let mut backup = w.backup_of(KEY).await;
    // Flip bytes in the middle: the blocks there decrypt to garbage inside the archive.
    let mid = backup.len() / 2;
    for b in &mut backup[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let key = object_key(w.database(), "20261125_030000");
    w.moto.put(BUCKET, &key, backup).await;

    assert_not_restorable(&w, &key, &["could not be restored", "corrupt"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_made_with_another_key_is_a_bad_decrypt() {
    let w = world("the-current-key-is-not-the-one-0123456789").await;
    seed(&w.db, w.database()).await;
    let key = object_key(w.database(), "20261125_040000");
    w.moto.put(BUCKET, &key, w.backup_of(KEY).await).await;

    let t = assert_not_restorable(&w, &key, &["bad decrypt"]).await;

    assert!(t.result.reason.unwrap().contains("key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_object_is_reported_as_truncated() {
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    let backup = w.backup_of(KEY).await;
    // Cut in the middle of a block, as an interrupted upload leaves it.
    let cut = backup.len() * 3 / 5 / 16 * 16 + 7;
    let key = object_key(w.database(), "20261125_050000");
    w.moto.put(BUCKET, &key, backup[..cut].to_vec()).await;

    assert_not_restorable(&w, &key, &["truncated"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_is_not_encrypted_is_refused() {
    let w = world(KEY).await;
    let key = object_key(w.database(), "20261125_060000");
    w.moto
        .put(BUCKET, &key, b"PGDMP a plain dump".to_vec())
        .await;

    assert_not_restorable(&w, &key, &["Salted__"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_backup_is_found_by_time_behind_ten_thousand_other_keys() {
    // Arrange: an older backup first in key order, 10 050 other keys, then the newest backup,
    // whose key sorts after all of them.
    let w = world_on(Moto::start_aging().await, KEY).await;
    seed(&w.db, w.database()).await;
    let backup = w.backup_of(KEY).await;
    let older = format!(
        "postgres-backups/2026/11/24/postgres-backup-20261124_020000_{}.sql.enc",
        w.database()
    );
    w.moto.put(BUCKET, &older, backup.clone()).await;
    let took = w
        .moto
        .fill(BUCKET, "postgres-backups/archive/", 10_050)
        .await;
    eprintln!("10 050 objects put into moto in {took:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newest = object_key(w.database(), "20261125_020000");
    w.moto.put(BUCKET, &newest, backup).await;

    // Act
    let t = w.restore_test(None).await;

    // Assert
    assert_eq!(t.result.object_key.as_deref(), Some(newest.as_str()));
    assert_eq!(
        t.result.status,
        TestStatus::Passed,
        "{:?}: {:#}",
        t.result.reason,
        t.result.detail
    );
    assert_eq!(t.result.detail["listing_complete"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backup_of_the_database_is_a_failed_test() {
    let w = world(KEY).await;
    w.moto
        .put(
            BUCKET,
            &object_key("link_chat", "20261125_020000"),
            b"x".to_vec(),
        )
        .await;

    let t = w.restore_test(None).await;

    assert_eq!(t.result.status, TestStatus::Failed);
    assert!(
        t.result
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no backup of"),
        "{:?}",
        t.result.reason
    );
    assert!(t.incident_id.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_object_is_refused_before_starting_and_opens_no_incident() {
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    let real = object_key(w.database(), "20261125_020000");
    w.moto.put(BUCKET, &real, w.backup_of(KEY).await).await;
    let typo = object_key(w.database(), "20261125_0200000");

    let err = w
        .tester("")
        .start(&request(Some(w.database()), Some(&typo)), None)
        .await
        .expect_err("a key that does not exist is refused before the test starts");

    assert!(matches!(err, StartError::UnknownObject { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.to_string().contains(&typo), "{err}");
    assert_eq!(w.tests_recorded().await, 0, "nothing was started");
    assert_eq!(
        w.store
            .live_incident(&incident_fingerprint(w.database()))
            .await
            .unwrap(),
        None,
        "nothing pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tests_of_one_database_share_one_incident_and_the_next_pass_resolves_it() {
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    let broken = object_key(w.database(), "20261124_020000");
    w.moto
        .put(BUCKET, &broken, b"Salted__garbage-garbage".to_vec())
        .await;

    let first = w.restore_test(None).await;
    let second = w.restore_test(None).await;

    assert_eq!(first.result.status, TestStatus::Failed);
    assert_eq!(second.result.status, TestStatus::Failed);
    let id = first.incident_id.expect("a failed test opens an incident");
    assert_eq!(second.incident_id, Some(id), "one incident per database");
    let timeline = w.store.timeline(id).await.unwrap();
    let failed = timeline
        .iter()
        .filter(|e| e.kind == "restore_test_failed")
        .count();
    let escalated = timeline.iter().filter(|e| e.kind == "escalated").count();
    assert_eq!((failed, escalated), (2, 1), "{timeline:#?}");

    // A good backup, newer: the next test passes and resolves the incident.
    let good = object_key(w.database(), "20261125_020000");
    w.moto.put(BUCKET, &good, w.backup_of(KEY).await).await;
    let third = w.restore_test(None).await;
    assert_eq!(
        third.result.status,
        TestStatus::Passed,
        "{:?}",
        third.result.reason
    );
    let incident = w.store.get_incident(id).await.unwrap().unwrap();
    assert_eq!(
        incident.status,
        backup_remediator::domain::incident::IncidentStatus::Resolved
    );
    let timeline = w.store.timeline(id).await.unwrap();
    let passed = timeline
        .iter()
        .find(|e| e.kind == "resolved")
        .expect("resolved event");
    assert_eq!(
        passed.detail["restore_test_id"], third.id,
        "{:#}",
        passed.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superuser_scratch_role_is_refused_unless_allowed() {
    let w = world(KEY).await;
    let req = request(Some(w.database()), None);

    let err = w
        .tester("allow_superuser = false")
        .start(&req, None)
        .await
        .expect_err("a superuser target_url is refused");

    let words = err.to_string();
    assert!(
        words.contains("restore_test.allow_superuser") && words.contains("superuser"),
        "{words}"
    );
    assert_eq!(w.tests_recorded().await, 0, "nothing was started");
    assert_eq!(
        w.tester("allow_superuser = true")
            .start(&req, None)
            .await
            .unwrap()
            .len(),
        1
    );

    // `serve` refuses to start on it, naming the key.
    let (_db, _store) =
        crate::support::app::fresh_store(crate::support::app::Backend::Sqlite).await;
    let settings = crate::support::app::test_settings(
        &_db.url(),
        &format!("[restore_test]\ntarget_url = \"{}\"\n", admin_url()),
    );
    let refused = backup_remediator::app::startup::Application::build(settings).await;
    let why = format!(
        "{:#}",
        refused.err().expect("serve refuses a superuser target_url")
    );
    assert!(why.contains("restore_test.allow_superuser"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_newer_than_our_pg_restore_is_version_drift_not_a_corrupt_backup() {
    // Arrange: a real pg_dump archive whose header announces format 1.99 (bytes 5, 6, 7 of a
    // custom archive are the format's major, minor and revision), which is what a pg_dump newer
    // than the service's pg_restore writes; encrypted as the job does.
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    let dir = tempfile::tempdir().unwrap();
    let dump = pg_dump_custom(dir.path(), w.database());
    let mut plain = std::fs::read(&dump).unwrap();
    assert_eq!(&plain[..5], b"PGDMP");
    plain[6] = 99;
    std::fs::write(&dump, &plain).unwrap();
    let key = object_key(w.database(), "20261125_070000");
    w.moto
        .put(BUCKET, &key, backup::openssl_encrypt(&dump, KEY))
        .await;

    // Act
    let t = w.restore_test(Some(&key)).await;

    // Assert: the test could not verify the backup (error, no incident against the backup), and
    // says why in terms an operator acts on: the archive's version and the image to rebuild.
    assert_eq!(t.result.status, TestStatus::Error, "{:?}", t.result.reason);
    let reason = t.result.reason.clone().unwrap();
    assert!(
        reason.contains("format 1.99")
            && reason.contains("newer pg_dump")
            && reason.contains("PG_MAJOR"),
        "{reason}"
    );
    assert!(!reason.contains("corrupt"), "{reason}");
    assert_eq!(t.incident_id, None, "nothing is said against the backup");
    assert_eq!(w.scratch_left().await, Vec::<String>::new());
}

/// A TCP proxy to `upstream` that closes each connection after passing `limit` response bytes.
async fn cutting_proxy(upstream: String, limit: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut passed = 0;
                let mut buf = vec![0u8; 8192];
                while passed < limit {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - passed),
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    passed += n;
                }
                // Dropping both halves closes the connection mid-response.
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_short_is_reported_and_says_nothing_against_the_backup() {
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    w.db.sql(
        w.database(),
        "CREATE TABLE noise AS SELECT md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 30000)",
    )
    .await;
    let backup = w.backup_of(KEY).await;
    assert!(
        backup.len() > 400_000,
        "the backup must outgrow the cut: {}",
        backup.len()
    );
    let key = object_key(w.database(), "20261125_070000");
    w.moto.put(BUCKET, &key, backup).await;
    let proxy = cutting_proxy(w.moto.url.clone(), 150_000).await;
    let mut settings = w.settings("");
    settings.s3.endpoint = proxy;
    let tester = RestoreTester::new(Arc::new(settings), w.store.clone(), Some(w.kube.clone()));
    let started = tester
        .start(&request(Some(w.database()), Some(&key)), None)
        .await
        .unwrap();
    let t = tester.run(started).await.remove(0);

    assert_eq!(t.result.status, TestStatus::Error, "{:?}", t.result.reason);
    let reason = t.result.reason.unwrap();
    assert!(
        reason.contains("download was interrupted") || reason.contains("download was truncated"),
        "{reason}"
    );
    assert_eq!(
        t.incident_id, None,
        "an interrupted download is not the backup's fault"
    );
    assert_eq!(w.scratch_left().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_period_is_tested_once_across_replicas() {
    let w = world(KEY).await;
    let (a, b) = (w.tester(""), w.tester(""));
    let req = TestRequest {
        trigger: "schedule".into(),
        actor: "schedule".into(),
        ..TestRequest::default()
    };

    let first = a.start(&req, Some("schedule:604800:2930")).await.unwrap();
    let second = b.start(&req, Some("schedule:604800:2930")).await.unwrap();
    // One run per target at a time: the next period waits for this one to end.
    let busy = b
        .start(&req, Some("schedule:604800:2931"))
        .await
        .unwrap_err();

    assert_eq!(first.len(), 2, "one test per configured database");
    assert!(
        second.is_empty(),
        "the other replica finds the period taken"
    );
    assert!(busy.to_string().contains("is running"), "{busy}");
    a.run(first).await;
    let next = b.start(&req, Some("schedule:604800:2931")).await.unwrap();
    assert_eq!(next.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_databases_and_a_missing_scratch_server_are_refused_before_anything_runs() {
    let w = world(KEY).await;
    let req = |db: &str| TestRequest {
        database: Some(db.to_owned()),
        trigger: "test".into(),
        actor: "t".into(),
        ..TestRequest::default()
    };
    let err = w
        .tester("")
        .start(&req("nope'; DROP"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown database"), "{err}");

    let unconfigured = RestoreTester::new(Arc::new(w.moto.settings("")), w.store.clone(), None);
    let err = unconfigured
        .start(&req("link_users"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("restore_test.target_url"), "{err}");
    assert_eq!(w.tests_recorded().await, 0, "nothing was started");
}

/// The manual backup Job's script, run as the pod would run it: a real `sh`, the real pg_dump
/// and openssl, the Secret's values in the environment; `aws` is a stand-in that keeps the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manual_backup_script_makes_backups_the_restore_test_restores() {
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    let settings = w.settings("");
    let plan = BackupPlan::new(&settings, vec![w.database().to_owned()], chrono::Utc::now());
    let script = manual_backup::script(&settings, &plan);
    let bin = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let aws = bin.path().join("aws");
    std::fs::write(
        &aws,
        "#!/bin/sh\n# aws s3 cp SRC DST --storage-class CLASS [--endpoint-url URL]\n\
         printf '%s\\n' \"$@\" > \"$OUT/args\"\ncp \"$3\" \"$OUT/object\"\n",
    )
    .unwrap();
    Command::new("chmod").arg("755").arg(&aws).status().unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );

    let run = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .env("OUT", out.path())
        .env("TMPDIR", out.path())
        .env("POSTGRES_USER", "postgres")
        .env("PGPASSWORD", "")
        .env("BACKUP_S3_BUCKET", BUCKET)
        .env("BACKUP_ENCRYPTION_KEY", KEY)
        .output()
        .unwrap();

    assert!(
        run.status.success(),
        "the Job script failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let args = std::fs::read_to_string(out.path().join("args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[0..2], ["s3", "cp"]);
    assert_eq!(args[3], format!("s3://{BUCKET}/{}", plan.object_keys[0]));
    assert_eq!(args[4..6], ["--storage-class", "STANDARD_IA"]);
    assert_eq!(args[6..8], ["--endpoint-url", w.moto.url.as_str()]);
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("manual-backup-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the plaintext dump must not stay on disk: {leftovers:?}"
    );
    let object = std::fs::read(out.path().join("object")).unwrap();
    assert!(object.starts_with(b"Salted__"));
    w.moto.put(BUCKET, &plan.object_keys[0], object).await;

    let t = w.restore_test(None).await;

    assert_eq!(t.result.status, TestStatus::Passed, "{:?}", t.result.reason);
    assert_eq!(
        t.result.object_key.as_deref(),
        Some(plan.object_keys[0].as_str())
    );
    assert_eq!(t.result.tables_restored, Some(4));
    assert_eq!(t.result.rows_restored, Some(120 + 2500 + 7));
}

/// `[[restore_test.checks]]` tables for `db`: (name, sql).
fn checks(db: &str, list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, sql)| {
            format!("[[restore_test.checks]]\ndatabase = \"{db}\"\nname = \"{name}\"\nsql = \"{sql}\"\n")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_checks_prove_the_restored_data_is_recent_and_a_stale_table_fails_the_test() {
    // Arrange: a table written 30 hours ago (the backups kept running, the data stopped) and
    // one written just now, in a real pg_dump archive.
    let w = world(KEY).await;
    seed(&w.db, w.database()).await;
    w.db.sql(
        w.database(),
        "CREATE TABLE events (created_at timestamptz NOT NULL);
         INSERT INTO events SELECT now() - interval '30 hours' - g * interval '1 minute' FROM generate_series(1, 50) g;
         CREATE TABLE sessions (created_at timestamptz NOT NULL);
         INSERT INTO sessions SELECT now() - g * interval '1 minute' FROM generate_series(1, 50) g;",
    )
    .await;
    let object = object_key(w.database(), "20261125_020000");
    w.moto.put(BUCKET, &object, w.backup_of(KEY).await).await;
    let fresh = "select max(created_at) > now() - interval '26 hours' from";

    // Act 1: the check of the fresh table, and a generous RTO.
    let passing = checks(
        w.database(),
        &[("sessions fresh", &format!("{fresh} sessions"))],
    );
    let ok = w
        .restore_test_with(Some(&object), &format!("rto_minutes = 30\n{passing}"))
        .await;

    // Assert 1
    assert_eq!(
        ok.result.status,
        TestStatus::Passed,
        "{:?}",
        ok.result.reason
    );
    assert_eq!(ok.result.checks.len(), 1);
    let c = &ok.result.checks[0];
    assert!(
        c.passed && c.value.as_deref() == Some("true") && c.reason.is_none(),
        "{c:?}"
    );
    let rto = ok.result.rto.as_ref().expect("the RTO is judged");
    assert!(
        rto.met && rto.rto_minutes == 30.0 && rto.restore_ms > 0,
        "{rto:?}"
    );
    assert_eq!(w.store.get_restore_test(ok.id).await.unwrap().unwrap(), ok);

    // Act 2: the stale table, and every way a check can fail to say true.
    let failing = checks(
        w.database(),
        &[
            ("sessions fresh", &format!("{fresh} sessions")),
            ("events fresh", &format!("{fresh} events")),
            (
                "audit fresh",
                "select max(at) > now() - interval '1 day' from audit_empty",
            ),
            ("accounts counted", "select count(*) from accounts"),
            ("two answers", "select true union all select true"),
            ("missing table", "select true from no_such_table"),
            (
                "no writes",
                "select count(*) > 0 from accounts; delete from accounts",
            ),
        ],
    );
    let t = w.restore_test_with(Some(&object), &failing).await;

    // Assert 2: failed, each check with its own outcome, stored and served as such.
    assert_eq!(t.result.status, TestStatus::Failed, "{:?}", t.result.reason);
    let outcome: Vec<(&str, bool, Option<&str>)> = t
        .result
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.passed, c.value.as_deref()))
        .collect();
    assert_eq!(
        outcome,
        [
            ("sessions fresh", true, Some("true")),
            ("events fresh", false, Some("false")),
            ("audit fresh", false, Some("NULL")),
            (
                "accounts counted",
                false,
                Some("a value of type int8, not a boolean")
            ),
            ("two answers", false, Some("2 rows")),
            ("missing table", false, None),
            ("no writes", false, None),
        ]
    );
    let missing = &t.result.checks[5];
    assert!(
        missing.reason.as_deref().unwrap().contains("no_such_table"),
        "{missing:?}"
    );
    let reason = t.result.reason.clone().unwrap();
    assert!(
        reason.contains("check \"events fresh\" on") && reason.contains("returned false, not true"),
        "{reason}"
    );
    assert!(
        !reason.contains("sessions fresh"),
        "a passing check is no reason: {reason}"
    );
    assert_eq!(t.result.rto, None, "no RTO configured");
    let stored = w.store.get_restore_test(t.id).await.unwrap().unwrap();
    assert_eq!(stored, t);
    let listed = w.store.list_restore_tests(None, 10).await.unwrap();
    assert_eq!(listed[0], t);
    assert_eq!(listed[1], ok);
    let json = serde_json::to_value(&stored).unwrap();
    assert_eq!(json["checks"][1]["name"], "events fresh");
    assert_eq!(json["checks"][1]["passed"], false);
    assert_eq!(w.scratch_left().await, Vec::<String>::new());
    // The incident (and so the Slack message's escalation line) names the failed check.
    let id = t.incident_id.expect("a failed test opens an incident");
    let timeline = w.store.timeline(id).await.unwrap();
    let escalated = timeline.iter().find(|e| e.kind == "escalated").unwrap();
    let why = escalated.detail["reason"].as_str().unwrap();
    assert!(
        why.contains("failed its restore test") && why.contains("events fresh"),
        "{why}"
    );
    let failed = timeline
        .iter()
        .find(|e| e.kind == "restore_test_failed")
        .unwrap();
    assert_eq!(failed.detail["checks"][1]["value"], "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_slower_than_the_rto_fails_the_test() {
    // Arrange: 300 000 rows, so that pg_restore alone takes far longer than an RTO of 0.001
    // minutes (60 ms).
    let w = world(KEY).await;
    w.db.sql(
        w.database(),
        "CREATE TABLE readings (id bigint PRIMARY KEY, value double precision, note text);
         INSERT INTO readings SELECT g, random(), md5(g::text) FROM generate_series(1, 300000) g;",
    )
    .await;
    let object = object_key(w.database(), "20261125_020000");
    w.moto.put(BUCKET, &object, w.backup_of(KEY).await).await;

    // Act
    let t = w
        .restore_test_with(Some(&object), "rto_minutes = 0.001\n")
        .await;

    // Assert: the data restored completely, but too slowly.
    assert_eq!(t.result.rows_restored, Some(300_000));
    assert_eq!(t.result.status, TestStatus::Failed, "{:?}", t.result.reason);
    let rto = t.result.rto.clone().expect("the RTO is judged");
    assert!(!rto.met, "{rto:?}");
    assert!(rto.restore_ms > 60, "{rto:?}");
    assert_eq!(
        rto.restore_ms,
        t.result.detail["restore_ms"].as_i64().unwrap()
    );
    let reason = t.result.reason.clone().unwrap();
    assert!(
        reason.starts_with("the restore took ")
            && reason.contains("longer than restore_test.rto_minutes = 0.001 (0.060 s)"),
        "{reason}"
    );
    eprintln!(
        "restore phase {} ms against an RTO of 60 ms",
        rto.restore_ms
    );
    assert_eq!(w.store.get_restore_test(t.id).await.unwrap().unwrap(), t);
    assert!(t.incident_id.is_some());
    assert_eq!(w.scratch_left().await, Vec::<String>::new());
}
