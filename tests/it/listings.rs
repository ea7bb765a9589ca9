//! Listings of more keys than one page holds, against moto: the watchdog, the verification and
//! the restore test read every key (one request per 1000), pick backups by time, and a listing
//! cut short says so instead of concluding "stale", "no backup" or "no new object".

use crate::silent_failures::{check_now, incidents_named, put_fresh_backups};
use crate::support::world;
use world::*;

/// Keys that are not backups, more than the 10 pages the listing used to stop after; they sort
/// before `postgres-backups/postgres-backup-…`, so the backups come after them in key order.
const FILLERS: usize = 10_050;
const FILLER_DIR: &str = "postgres-backups/archive/";

async fn fill(w: &World, n: usize) {
    let took = w.moto.fill(BUCKET, FILLER_DIR, n).await;
    eprintln!("{n} objects put into moto in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_finds_fresh_backups_beyond_ten_thousand_other_keys() {
    let w = World::builder()
        .job_failed_with_logs(FAILED_DUMP)
        .aging_moto()
        .build()
        .await;
    fill(&w, FILLERS).await;
    put_fresh_backups(&w).await;

    let report = check_now(&w).await;

    assert!(report.opened.is_empty(), "{report:?}");
    for v in &report.verdicts {
        assert!(v.reasons.is_empty() && v.fresh, "{v:?}");
    }
    assert_eq!(report.s3_list_requests, 11, "one request per 1000 keys");
    assert!(report.unanswered.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_fails_part_way_is_incomplete_never_stale_or_no_backup() {
    // Arrange: S3 answers two pages, then fails; the backups would come after those pages.
    let w = World::builder()
        .job_failed_with_logs(FAILED_DUMP)
        .fresh_backup_metric()
        .aging_moto()
        .listing_fails_after(2)
        .build()
        .await;
    fill(&w, 2_500).await;
    put_fresh_backups(&w).await;

    // Act
    let report = check_now(&w).await;

    // Assert: nothing concluded from the part not read, and the record says why.
    assert!(report.opened.is_empty(), "{report:?}");
    for v in &report.verdicts {
        assert!(v.reasons.is_empty(), "{v:?}");
        assert!(
            v.evidence["s3_incomplete"]
                .as_str()
                .is_some_and(|w| w.contains("incomplete")),
            "{v:?}"
        );
    }
    let why = report.unanswered.get("s3").expect("s3 is said unanswered");
    assert!(
        why.contains("incomplete") && why.contains("after 2 pages"),
        "{why}"
    );
    assert!(incidents_named(&w, "PostgreSQLBackupStale")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_30_hours_old_is_stale_evidence_when_s3_cannot_be_read() {
    // The job's Secret names a bucket that does not exist, and the metric's last success is
    // 30 h old (RPO 24 h).
    let w = World::builder()
        .bucket_gone()
        .job_failed_with_logs(FAILED_DUMP)
        .build()
        .await;

    let report = check_now(&w).await;

    // One root cause, one incident: the second database's evidence joins the first's incident.
    assert_eq!(report.opened.len(), 1, "{report:?}");
    assert_eq!(report.verdicts.len(), 2, "{report:?}");
    assert!(report.unanswered.contains_key("s3"), "{report:?}");
    for v in &report.verdicts {
        let reasons: Vec<&str> = v.reasons.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons, ["metric_stale"], "{v:?}");
        assert!(v.words[0].contains("30 h"), "{:?}", v.words);
    }
    for incident in incidents_named(&w, "PostgreSQLBackupStale").await {
        assert_eq!(incident["labels"]["reason"], "metric_stale");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verification_finds_its_new_backups_beyond_ten_thousand_other_keys() {
    let w = World::builder()
        .volume_full()
        .job_failed_with_logs(&format!("{FAILED_DUMP}{DISK_FULL_LOG}"))
        .policy(LIVE)
        .aging_moto()
        .build()
        .await;
    fill(&w, FILLERS).await;
    let id = w.alert(&w.base, "2026-11-24T02:30:00Z").await;
    let jobs = w.wait_for_jobs(1).await;

    // The Job's backups (`postgres-backups/verify-…`) sort after the 10 050 other keys.
    let dir = tempfile::tempdir().unwrap();
    let backup = crate::support::backup::real_backup(dir.path(), KEY);
    for db in &w.pg.dbs[..2] {
        let key = format!(
            "postgres-backups/verify-{}-{db}.sql.enc",
            uuid::Uuid::new_v4().simple()
        );
        w.moto.put(BUCKET, &key, backup.clone()).await;
    }
    w.kube.finish_job(&jobs[0], true);
    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;

    let verify = step(&incident, "verify_backup");
    assert_eq!(verify["state"], "succeeded", "{verify:#}");
    assert_eq!(verify["output"]["objects"].as_array().unwrap().len(), 2);
    assert_eq!(incident["status"], "remediated", "{:?}", states(&incident));
}

#[tokio::test]
async fn a_prefix_is_a_directory_and_a_listing_stopped_by_its_ceiling_says_so() {
    use backup_remediator::infra::s3::{list_backups, list_backups_upto, Cut};
    let moto = crate::support::moto::Moto::start_aging().await;
    moto.create_bucket(BUCKET).await;
    let s3 = moto.s3(crate::support::moto::admin_credentials());
    moto.put(
        BUCKET,
        "postgres-backups/postgres-backup-1_app.sql.enc",
        b"x".to_vec(),
    )
    .await;
    moto.put(
        BUCKET,
        "postgres-backups-staging/postgres-backup-1_app.sql.enc",
        b"x".to_vec(),
    )
    .await;

    // The prefix without its `/` lists its own directory only.
    let listing = list_backups(&s3, BUCKET, "postgres-backups").await.unwrap();
    let keys: Vec<&str> = listing.backups.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["postgres-backups/postgres-backup-1_app.sql.enc"]);
    assert!(listing.complete());

    // 3 500 keys and a ceiling of 3 pages: cut, and it says so.
    moto.fill(BUCKET, "postgres-backups/archive/", 3_500).await;
    let cut = list_backups_upto(&s3, BUCKET, "postgres-backups/", 3)
        .await
        .unwrap();
    assert_eq!(cut.cut, Some(Cut::Ceiling { pages: 3 }));
    assert!(!cut.complete());
    assert_eq!((cut.pages, cut.keys), (3, 3_000));
    let all = list_backups(&s3, BUCKET, "postgres-backups/")
        .await
        .unwrap();
    assert!(all.complete(), "{:?}", all.cut);
    assert_eq!((all.pages, all.backups.len()), (4, 3_501));
}
