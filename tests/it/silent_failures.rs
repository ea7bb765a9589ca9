//! End to end, the failures no alert announces: backups that stop (the freshness watchdog, a
//! suspended or deleted CronJob) and a pg_dump older than the server. The real PostgreSQL 15,
//! moto's S3 (reporting chosen objects as hours old), the real Prometheus and the stand-in
//! Kubernetes API, with the service running against them.

use std::time::Duration;

use backup_remediator::workflow::watchdog::{self, Reason};
use serde_json::Value;

use crate::support::cluster::fixtures as fx;
use crate::support::pg;
use crate::support::world;
use world::*;

/// What pg_dump 14 prints against a PostgreSQL 15 server, and exits 1.
const MISMATCH_LOG: &str = "Starting backup of link_users\n\
    pg_dump: error: aborting because of server version mismatch\n\
    pg_dump: detail: server version: 15.20 (Debian 15.20-0+deb12u1); pg_dump version: 14.13\n";

/// The real server's major version.
async fn server_major() -> i64 {
    let mut c = pg::admin_on("postgres").await;
    let v: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut c)
        .await
        .unwrap();
    i64::from(v / 10_000)
}

/// The incidents the service serves for `alertname`, newest first.
pub(crate) async fn incidents_named(w: &World, alertname: &str) -> Vec<Value> {
    let mut all = w.incidents().await;
    all.retain(|i| i["alertname"] == alertname);
    all
}

/// A backup of each configured database, made just now.
pub(crate) async fn put_fresh_backups(w: &World) {
    for db in &w.pg.dbs[..2] {
        w.moto
            .put(
                BUCKET,
                &format!("postgres-backups/postgres-backup-20261130_020000_{db}.sql.enc"),
                b"fresh".to_vec(),
            )
            .await;
    }
}

/// The in-process watchdog checks the current 15-minute period (this test's replica takes it).
pub(crate) async fn check_now(w: &World) -> watchdog::PeriodReport {
    let now = watchdog::period_of(chrono::Utc::now(), Duration::from_secs(900));
    let dog = w.watchdog.clone().unwrap();
    dog.check_period(now)
        .await
        .unwrap()
        .expect("the period is ours")
}

fn escalation_reason(incident: &Value) -> String {
    step(incident, "escalate")["reason"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_older_than_the_server_is_a_version_mismatch_escalated_with_the_image_to_set() {
    let w = World::builder()
        .job_failed_with_logs(MISMATCH_LOG)
        .build()
        .await;
    let major = server_major().await;
    assert!(major > 14, "the test needs a server newer than pg_dump 14");
    w.kube
        .put(fx::cronjob_with(
            &w.kube.ns.held(),
            "postgres:14-alpine",
            false,
        ))
        .await;
    let want = format!("postgres:{major}-alpine");

    let incident = w.alert_and_diagnose().await;

    assert_scenario(
        &incident,
        "version_mismatch",
        &format!("set the CronJob's image to {want}"),
        "aborting because of server version mismatch",
    );
    let versions = finding(&incident, "versions");
    assert_eq!(versions["status"], "problem");
    assert_eq!(versions["evidence"]["server_major"], major);
    assert_eq!(versions["evidence"]["images"][0]["pg_dump_major"], 14);
    let id = incident["id"].as_i64().unwrap();
    let done = w
        .wait_for(id, "an escalation", |i| i["status"] == "escalated")
        .await;
    assert_eq!(states(&done), [("escalate".into(), "succeeded".into())]);
    let reason = escalation_reason(&done);
    assert!(
        reason.contains(&format!(
            "kubectl -n {} set image cronjob/postgres-backup '*={want}'",
            w.kube.namespace()
        )),
        "{reason}"
    );
    assert!(w.kube.writes().is_empty(), "nothing is changed for people");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unofficial_image_is_said_to_be_unknown_and_is_not_a_mismatch() {
    let w = World::builder()
        .job_failed_with_logs(&format!(
            "{FAILED_DUMP}pg_dump: dumping contents of table \"public.users\"\n"
        ))
        .build()
        .await;
    w.kube
        .put(fx::cronjob_with(
            &w.kube.ns.held(),
            "registry.example/postgres-backup:1.4",
            false,
        ))
        .await;

    let incident = w.alert_and_diagnose().await;

    let versions = finding(&incident, "versions");
    assert_eq!(versions["status"], "ok", "{versions:#}");
    assert!(
        versions["summary"]
            .as_str()
            .unwrap()
            .contains("pg_dump version of registry.example/postgres-backup:1.4 unknown"),
        "{versions:#}"
    );
    assert_ne!(incident["diagnosis"]["scenario"], "version_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cronjob_is_the_backup_schedule_scenario() {
    let w = World::builder()
        .job_failed_with_logs(FAILED_DUMP)
        .build()
        .await;
    w.kube.remove("CronJob", "postgres-backup").await;

    let incident = w.alert_and_diagnose().await;

    let d = &incident["diagnosis"];
    assert_eq!(d["scenario"], "backup_schedule", "{}", d["summary"]);
    assert!(
        evidence_texts(&incident)
            .iter()
            .any(|e| e.starts_with("[direct backup_job]")
                && e.contains("CronJob postgres-backup does not exist")),
        "{:#?}",
        evidence_texts(&incident)
    );
    let id = incident["id"].as_i64().unwrap();
    let done = w
        .wait_for(id, "an escalation", |i| i["status"] == "escalated")
        .await;
    assert!(escalation_reason(&done).contains("re-apply the manifest of CronJob postgres-backup"));
}

/// The stale world: the first database's newest backup is 30 h old, the second has none, and
/// the CronJob is suspended (which is why).
async fn stale_world() -> (World, String, String) {
    let w = World::builder()
        .job_failed_with_logs(FAILED_DUMP)
        .aging_moto()
        .build()
        .await;
    let (db0, db1) = (w.pg.dbs[0].clone(), w.pg.dbs[1].clone());
    w.moto
        .put(
            BUCKET,
            &format!("postgres-backups/postgres-backup-20261129-aged30h_{db0}.sql.enc"),
            b"old".to_vec(),
        )
        .await;
    w.kube
        .put(fx::cronjob_with(
            &w.kube.ns.held(),
            "registry.example/postgres-backup:1.4",
            true,
        ))
        .await;
    (w, db0, db1)
}

/// One root cause (the suspended CronJob), one incident: the first stale database opens it and
/// the second's evidence joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_opens_one_incident_for_the_stale_backups_once_and_resolves_it_when_fresh() {
    let (w, db0, db1) = stale_world().await;
    let dog = w.watchdog.clone().unwrap();
    let interval = chrono::Duration::minutes(15);
    let p1 = watchdog::period_of(chrono::Utc::now(), Duration::from_secs(900));

    let report = dog
        .check_period(p1)
        .await
        .unwrap()
        .expect("this replica checks p1");

    let reasons = |db: &str| {
        report
            .verdicts
            .iter()
            .find(|v| v.database == db)
            .unwrap()
            .reasons
            .clone()
    };
    assert_eq!(reasons(&db0), [Reason::Stale]);
    assert_eq!(reasons(&db1), [Reason::NoBackup]);
    assert_eq!(report.opened.len(), 1, "{report:?}");
    let (db, id) = report.opened.iter().next().unwrap();
    assert_eq!(db, &db0);
    let incident = w
        .wait_for(*id, "a diagnosis", |i| !i["diagnosis"].is_null())
        .await;
    assert_eq!(incident["alertname"], "PostgreSQLBackupStale");
    assert_eq!(incident["fingerprint"], watchdog::fingerprint(db));
    assert_eq!(incident["labels"]["database"], db.as_str());
    let found = |incident: &Value, db: &str| {
        incident["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "watchdog_found" && e["detail"]["database"] == db)
            .cloned()
            .unwrap_or_else(|| panic!("the watchdog's evidence of {db} is on the timeline"))
    };
    let stale = found(&incident, &db0);
    assert!(stale["detail"]["evidence"]["newest"]["key"]
        .as_str()
        .unwrap()
        .contains("aged30h"));
    assert!(stale["detail"]["evidence"]["newest"]["age_seconds"].as_i64() > Some(29 * 3600));
    assert_eq!(found(&incident, &db1)["detail"]["reasons"][0], "no_backup");
    // Diagnosed, planned and escalated like PostgreSQLBackupFailed: the suspended CronJob.
    assert_eq!(
        incident["diagnosis"]["scenario"], "backup_schedule",
        "{}",
        incident["diagnosis"]["summary"]
    );
    let done = w
        .wait_for(*id, "an escalation", |i| i["status"] == "escalated")
        .await;
    assert!(escalation_reason(&done).contains(&format!(
        "kubectl -n {} patch cronjob/postgres-backup -p '{{\"spec\":{{\"suspend\":false}}}}'",
        w.kube.namespace()
    )));

    // The next period finds the same: nothing new is opened, and no evidence repeated.
    let p2 = p1 + interval;
    let again = dog.check_period(p2).await.unwrap().unwrap();
    assert!(again.opened.is_empty(), "{again:?}");
    assert_eq!(incidents_named(&w, "PostgreSQLBackupStale").await.len(), 1);
    let kinds = timeline_kinds(&w.incident(*id).await);
    assert_eq!(
        kinds.iter().filter(|k| *k == "watchdog_found").count(),
        2,
        "{kinds:?}"
    );
    assert!(
        dog.check_period(p2).await.unwrap().is_none(),
        "a period is checked once"
    );

    // Fresh backups again: the watchdog resolves its incident.
    put_fresh_backups(&w).await;
    let fresh = dog.check_period(p2 + interval).await.unwrap().unwrap();
    assert_eq!(fresh.resolved.len(), 1, "{fresh:?}");
    for incident in incidents_named(&w, "PostgreSQLBackupStale").await {
        assert_eq!(incident["status"], "resolved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_that_finds_nothing_wrong_opens_nothing_and_lists_s3_once() {
    let w = World::builder()
        .job_failed_with_logs(FAILED_DUMP)
        .build()
        .await;
    put_fresh_backups(&w).await;
    w.moto.start_recording().await;

    let report = check_now(&w).await;

    assert!(report.opened.is_empty(), "{report:?}");
    assert!(report.verdicts.iter().all(|v| v.fresh), "{report:?}");
    let served = w.moto.recorded().await;
    let s3: Vec<_> = served
        .iter()
        .filter(|(_, url)| !url.contains("/moto-api/"))
        .collect();
    eprintln!(
        "a healthy watchdog period cost {} S3 request(s) for {} databases: {s3:?}",
        s3.len(),
        report.verdicts.len()
    );
    assert_eq!(s3.len(), 1, "one listing for every database: {s3:?}");
    assert!(
        s3[0].0 == "GET" && s3[0].1.contains("list-type=2"),
        "{s3:?}"
    );
    assert_eq!(report.s3_list_requests, 1);
    assert!(incidents_named(&w, "PostgreSQLBackupStale")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_that_cannot_list_the_bucket_opens_nothing_and_says_it_could_not_look() {
    // Arrange: the job's Secret names a bucket that does not exist, so the period's one listing
    // fails; the metric's last success is recent (an old one would be evidence on its own).
    let w = World::builder()
        .bucket_gone()
        .fresh_backup_metric()
        .job_failed_with_logs(FAILED_DUMP)
        .build()
        .await;

    // Act
    let report = check_now(&w).await;

    // Assert: no incident from a listing that did not happen, and the blindness is on record.
    assert!(report.opened.is_empty(), "{report:?}");
    let why = report.unanswered.get("s3").expect("s3 is said unanswered");
    assert!(why.contains("s3://link-backups-deleted"), "{why}");
    assert!(!report.unanswered.contains_key("prometheus"), "{report:?}");
    assert!(incidents_named(&w, "PostgreSQLBackupStale")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_backups_without_the_backup_metric_still_open_an_incident_with_each_databases_evidence(
) {
    let w = World::builder()
        .job_failed_with_logs(FAILED_DUMP)
        .no_backup_metrics()
        .build()
        .await;
    put_fresh_backups(&w).await;

    let report = check_now(&w).await;

    assert!(
        report
            .verdicts
            .iter()
            .all(|v| v.reasons == [Reason::MetricAbsent]),
        "{report:?}"
    );
    assert_eq!(report.opened.len(), 1, "one root cause, one incident");
    let id = report.opened[&w.pg.dbs[0]];
    let incident = w
        .wait_for(id, "a diagnosis", |i| !i["diagnosis"].is_null())
        .await;
    assert_eq!(incident["labels"]["reason"], "metric_absent");
    let evidence: Vec<&Value> = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "watchdog_found")
        .map(|e| &e["detail"]["database"])
        .collect();
    assert_eq!(evidence, [&w.pg.dbs[0], &w.pg.dbs[1]]);
    assert!(incident["annotations"]["description"]
        .as_str()
        .unwrap()
        .contains("postgres_backup_last_success_timestamp is absent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_store_check_a_period_once_and_open_the_incident_once() {
    // No backup of either database: each replica's watchdog checks the current period at start.
    let w = World::builder()
        .job_failed_with_logs(FAILED_DUMP)
        .processes(2)
        .watchdog()
        .build()
        .await;

    for _ in 0..300 {
        if !incidents_named(&w, "PostgreSQLBackupStale")
            .await
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both replicas have had their chance.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stale = incidents_named(&w, "PostgreSQLBackupStale").await;
    assert_eq!(
        stale.len(),
        1,
        "one incident for one root cause: {stale:#?}"
    );
    let mut c = pg::admin_on(&w.pg.dbs[2]).await;
    let periods: i64 =
        sqlx::query_scalar("SELECT count(*) FROM watchdog_periods WHERE finished_at IS NOT NULL")
            .fetch_one(&mut c)
            .await
            .unwrap();
    // Each replica counts the periods it checked and those another replica had taken.
    let (mut checked, mut taken) = (0.0, 0.0);
    for base in &w.bases {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |outcome: &str| -> f64 {
            let series = format!("backup_remediator_watchdog_runs_total{{outcome=\"{outcome}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .map_or(0.0, |v| v.trim().parse().unwrap())
        };
        checked += value("checked");
        taken += value("taken");
    }
    assert!(periods >= 1, "a period was checked");
    assert_eq!(
        checked, periods as f64,
        "each period was checked by one replica"
    );
    assert!(taken >= 1.0, "the other replica found the period taken");
}
