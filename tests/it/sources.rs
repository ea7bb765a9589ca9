//! Backup sources other than the pg_dump CronJob, and the WAL-archive guard, against real parts:
//! Debian's pgbackrest with a private PostgreSQL of the test's own (`support::archiving`:
//! initdb on a free port, `archive_mode = on`, `archive_command` = `pgbackrest archive-push`,
//! repo1 a directory of the test), Prometheus from Debian's package for the metric, and the
//! store for the guard's incidents.

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::config::Settings;
use backup_remediator::domain::alert::WAL_ARCHIVE_FAILING;
use backup_remediator::domain::diagnosis::Scenario;
use backup_remediator::domain::finding::{Finding, Signal, Status};
use backup_remediator::domain::plan::StepKind;
use backup_remediator::domain::policy::Policy;
use backup_remediator::workflow::engine::{Examiner, Report};
use backup_remediator::workflow::intake::Intake;
use backup_remediator::workflow::playbooks::{self, PlanInput};
use backup_remediator::workflow::wal_guard::WalGuard;
use chrono::Utc;
use sqlx::Executor;

use crate::support::app::{fresh_store, Backend};
use crate::support::archiving::{Archive, ArchivingServer, STANZA};
use crate::support::procs;

/// Settings of one pgBackRest target reading `server`'s stanza, with `extra` TOML.
fn pgbackrest_settings(server: &ArchivingServer, extra: &str) -> Settings {
    Settings::from_toml(&format!(
        "[backup]\nsource = \"pgbackrest\"\n[pgbackrest]\nconfig = \"{}\"\nstanza = \"{STANZA}\"\n\
         deadline_ms = 20000\n{extra}",
        server.conf().display()
    ))
    .expect("settings")
}

async fn examine(settings: Settings) -> Report {
    backup_remediator::install_crypto_provider();
    let ex = Examiner::new(Arc::new(settings), None);
    tokio::time::timeout(Duration::from_secs(40), ex.examine(ex.context()))
        .await
        .expect("the diagnosis finishes")
}

fn finding<'a>(r: &'a Report, probe: &str) -> &'a Finding {
    r.findings
        .iter()
        .find(|f| f.probe == probe)
        .unwrap_or_else(|| panic!("no {probe} finding: {:#?}", r.findings))
}

/// Examines `server`'s stanza with a real Prometheus whose metric of the last success says
/// `hours_ago`.
async fn with_metric(server: &ArchivingServer, hours_ago: i64) -> Report {
    const METRIC: &str = "pgbackrest_last_success_timestamp";
    let dir = tempfile::tempdir().unwrap();
    let value = Utc::now().timestamp() - hours_ago * 3600;
    let exporter = procs::exporter(move || format!("{METRIC} {value}\n")).await;
    let (_prom, url) = procs::prometheus(dir.path(), &[exporter.to_string()], None, None).await;
    procs::wait_for_series(&url, METRIC).await;
    examine(pgbackrest_settings(
        server,
        &format!("freshness_metric = \"{METRIC}\"\n[prometheus]\nurl = \"{url}\""),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbackrest_target_is_judged_by_its_repository_and_not_by_the_cronjob() {
    let server = ArchivingServer::start(Archive::PgBackRest);
    server.pgbackrest_as_postgres(&["--type=full", "backup"]);

    let report = examine(pgbackrest_settings(&server, "")).await;

    let probes: Vec<&str> = report.findings.iter().map(|f| f.probe.as_str()).collect();
    assert_eq!(
        probes,
        ["primary", "disk", "pgbackrest"],
        "no CronJob, Secret, image or S3 probe for a pgBackRest target"
    );
    let f = finding(&report, "pgbackrest");
    assert_eq!(f.status, Status::Ok, "{}: {}", f.summary, f.evidence);
    assert!(
        f.summary.starts_with("Newest backup ") || f.summary.starts_with("newest backup "),
        "{}",
        f.summary
    );
    assert_eq!(f.evidence["info"]["newest"]["type"], "full");
    assert!(
        f.evidence["info"]["newest"]["age_seconds"]
            .as_i64()
            .unwrap()
            < 600
    );
    assert_eq!(f.evidence["check"]["ok"], true, "{}", f.evidence["check"]);
    assert!(f.evidence["info"]["archive"][0]["max"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stanza_without_a_backup_is_stale_and_a_metric_saying_fresh_is_a_finding_of_its_own() {
    let server = ArchivingServer::start(Archive::PgBackRest);

    let report = with_metric(&server, 1).await;

    let f = finding(&report, "pgbackrest");
    assert_eq!(f.status, Status::Problem, "{}", f.summary);
    assert!(
        f.signals.iter().any(|s| matches!(
            s,
            Signal::RepositoryBackupStale {
                age_seconds: None,
                ..
            }
        )),
        "{:?}",
        f.signals
    );
    assert!(
        f.signals.iter().any(|s| matches!(s, Signal::FreshnessDisagreement { repository_age_seconds: None, metric_age_seconds: Some(a), .. } if (3600..3700).contains(a))),
        "{:?}",
        f.signals
    );
    assert!(
        f.summary
            .contains("metric says fresh (last success 1 h old), repository's newest is missing"),
        "{}",
        f.summary
    );
    let d = &report.diagnosis;
    assert_eq!(d.scenario, Scenario::BackupSchedule, "{d:?}");
    assert!(
        d.context.iter().any(|c| c.contains("disagree")),
        "{:?}",
        d.context
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_repository_under_a_stale_metric_says_the_metric_lies() {
    let server = ArchivingServer::start(Archive::PgBackRest);
    server.pgbackrest_as_postgres(&["--type=full", "backup"]);

    let report = with_metric(&server, 30).await;

    let f = finding(&report, "pgbackrest");
    assert_eq!(f.status, Status::Problem, "{}", f.summary);
    assert!(
        f.summary
            .contains("metric says stale (last success 30 h old)")
            && f.summary
                .contains("the metric lies, the repository has a fresh backup"),
        "{}",
        f.summary
    );
    assert!(!f
        .signals
        .iter()
        .any(|s| matches!(s, Signal::RepositoryBackupStale { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stanza_the_repository_does_not_hold_is_an_unhealthy_repository_and_escalates() {
    let server = ArchivingServer::start(Archive::PgBackRest);
    let mut settings = pgbackrest_settings(&server, "");
    settings.pgbackrest.stanza = "ledger".into();

    let report = examine(settings.clone()).await;

    let f = finding(&report, "pgbackrest");
    assert_eq!(f.status, Status::Problem, "{}", f.summary);
    assert!(
        f.signals.iter().any(|s| matches!(s, Signal::RepositoryUnhealthy { code: 1, message, .. } if message == "missing stanza path")),
        "{:?}",
        f.signals
    );
    assert_eq!(report.diagnosis.scenario, Scenario::Repository);
    let steps = plan("PostgreSQLBackupFailed", &report, &settings);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].0, StepKind::Escalate);
    assert!(steps[0].1.contains("stanza ledger"), "{}", steps[0].1);
}

fn plan(alertname: &str, r: &Report, settings: &Settings) -> Vec<(StepKind, String)> {
    let input = PlanInput {
        diagnosis: &r.diagnosis,
        findings: &r.findings,
        settings,
    };
    playbooks::plan(alertname, &input, &Policy::defaults(false))
        .expect("a playbook answers")
        .into_iter()
        .map(|s| (s.kind, s.reason))
        .collect()
}

// ---------- the WAL-archive guard ----------

/// A guard over one target reading `server`, with its incidents in a fresh store.
async fn guard_of(
    server: &ArchivingServer,
    extra: &str,
) -> (
    crate::support::app::TestDb,
    backup_remediator::store::Store,
    WalGuard,
    Settings,
) {
    let (db, store) = fresh_store(Backend::Postgres).await;
    let settings = Settings::from_toml(&format!(
        "[alerts]\nhandled = [\"PostgreSQLBackupFailed\", \"PostgreSQLBackupStale\", \"{WAL_ARCHIVE_FAILING}\"]\n\
         [wal_archive]\ndatabase_url = \"{}\"\nvolume_path = \"{}\"\n{extra}",
        server.url(),
        server.data().display()
    ))
    .unwrap();
    let intake = Arc::new(
        Intake::new(store.clone(), &settings.alerts.handled, 100).with_routes(settings.routes()),
    );
    let guard = WalGuard::new(Arc::new(settings.clone()), store.clone(), intake);
    (db, store, guard, settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_command_that_keeps_failing_opens_one_incident_with_the_forecast_and_deletes_nothing(
) {
    let server = ArchivingServer::start(Archive::Command("false".into()));
    server.generate_wal(3).await;
    server.wait_for_failures().await;
    let (_db, store, guard, _) = guard_of(&server, "").await;
    let ready = server.ready_segments().await;
    assert!(ready >= 3, "{ready} segments wait for the archiver");

    let now = guard.check_at(Utc::now()).await.unwrap();
    assert!(now.opened.is_empty(), "failing for seconds, not 10 minutes");
    let a = now.assessed["link-services"].as_ref().unwrap();
    assert!(a.failing);
    assert_eq!(a.cause.words(), "archive_command exits with status 1");

    let later = Utc::now() + chrono::Duration::minutes(11);
    let report = guard.check_at(later).await.unwrap();

    let id = report.opened["link-services"];
    let incident = store.get_incident(id).await.unwrap().unwrap();
    assert_eq!(incident.alertname, WAL_ARCHIVE_FAILING);
    assert_eq!(incident.target.as_deref(), Some("link-services"));
    let description = incident.annotations["description"].as_str().unwrap();
    assert!(
        description.contains("archive_command exits with status 1"),
        "{description}"
    );
    assert!(description.contains("the pg_wal volume ("), "{description}");
    assert!(description.contains("is full in about"), "{description}");
    assert!(description.contains("Nothing was deleted and archive_command was not changed"));
    let timeline = store.timeline(id).await.unwrap();
    let found = timeline
        .iter()
        .find(|e| e.kind == "wal_archive_found")
        .expect("the guard's evidence");
    assert!(found.detail["pending_bytes"].as_u64().unwrap() >= 3 * 16 * 1024 * 1024);
    assert!(found.detail["full_at"].is_string(), "{}", found.detail);

    let again = guard
        .check_at(later + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert!(
        again.opened.is_empty(),
        "one incident per target while it is open"
    );
    assert!(server.ready_segments().await >= ready, "no WAL was deleted");
    let command: String = sqlx::query_scalar("SHOW archive_command")
        .fetch_one(&mut server.connect().await)
        .await
        .unwrap();
    assert_eq!(command, "false", "archive_command was not changed");

    // The operator fixes the archive: the guard resolves its incident.
    let mut c = server.connect().await;
    c.execute("ALTER SYSTEM SET archive_command = 'true'")
        .await
        .unwrap();
    c.execute("SELECT pg_reload_conf()").await.unwrap();
    let mut resolved = None;
    for _ in 0..100 {
        server.generate_wal(1).await;
        let r = guard.check_at(Utc::now()).await.unwrap();
        if let Some(id) = r.resolved.get("link-services") {
            resolved = Some(*id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(resolved, Some(id), "archiving works again: resolved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbackrest_pushing_to_a_missing_repository_is_diagnosed_as_a_failing_archive_and_escalated_with_the_forecast(
) {
    let server = ArchivingServer::start(Archive::PgBackRestNoRepository);
    server.generate_wal(2).await;
    server.wait_for_failures().await;
    let extra = format!(
        "[backup]\nsource = \"pgbackrest\"\n[pgbackrest]\nconfig = \"{}\"\nstanza = \"{STANZA}\"\ndeadline_ms = 5000\n",
        server.conf().display()
    );
    let (_db, store, guard, settings) = guard_of(&server, &extra).await;

    // The failure began 20 minutes ago (the segments' ready time), so the guard and the
    // engine's probe both judge it at the real time.
    server.age_ready_segments(20);
    let report = guard.check_at(Utc::now()).await.unwrap();
    let id = report.opened["link-services"];
    let incident = store.get_incident(id).await.unwrap().unwrap();
    let description = incident.annotations["description"].as_str().unwrap();
    assert!(
        description.contains("the repository or its stanza is missing or unreadable"),
        "{description}"
    );

    // The engine's diagnosis of that incident: the target's probes, its source's playbook.
    let diagnosis = examine(settings.clone()).await;
    let wal = finding(&diagnosis, "wal_archive");
    assert_eq!(wal.status, Status::Problem, "{}", wal.summary);
    assert_eq!(
        diagnosis.diagnosis.scenario,
        Scenario::WalArchive,
        "{:?}",
        diagnosis.diagnosis
    );
    let steps = plan(WAL_ARCHIVE_FAILING, &diagnosis, &settings);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].0, StepKind::Escalate);
    assert!(
        steps[0]
            .1
            .contains("WAL archiving keeps failing: the repository or its stanza is missing")
            && steps[0]
                .1
                .contains("of WAL kept in pg_wal for the archiver")
            && steps[0].1.contains("no WAL was deleted"),
        "{}",
        steps[0].1
    );
    assert!(
        diagnosis
            .diagnosis
            .evidence
            .iter()
            .any(|e| e.text.contains("of WAL kept in pg_wal")),
        "the forecast is in the evidence Slack shows: {:?}",
        diagnosis.diagnosis.evidence
    );
    let view = backup_remediator::workflow::notify::view::View {
        incident: &incident,
        diagnosis: Some(&diagnosis.diagnosis),
        steps: &[],
        timeline: &[],
        last_good_backup: None,
        now: Utc::now(),
        external_url: "",
        rpo_hours: 24,
        buttons: false,
    };
    let slack = backup_remediator::workflow::notify::slack::render(&view).to_string();
    assert!(
        slack.contains("WAL archiving")
            && slack.contains("of WAL kept in pg_wal for the archiver")
            && slack.contains("is full in about"),
        "the Slack message states the forecast: {slack}"
    );
}

// ---------- the restore test of a pgBackRest backup ----------

/// A target whose stanza holds one full backup of database `shop` (three orders), with the
/// restore test's settings pointing at a scratch directory of the test and `checks`.
async fn backed_up_shop(checks: &str) -> (ArchivingServer, Settings, std::path::PathBuf) {
    let server = ArchivingServer::start(Archive::PgBackRest);
    let mut c = server.connect().await;
    c.execute("CREATE DATABASE shop").await.unwrap();
    let mut shop = sqlx::PgConnection::connect(&format!(
        "postgres://postgres@127.0.0.1:{}/shop",
        server.port
    ))
    .await
    .unwrap();
    shop.execute("CREATE TABLE orders (id int primary key, placed timestamptz default now()); INSERT INTO orders (id) VALUES (1), (2), (3)")
        .await
        .unwrap();
    server.pgbackrest_as_postgres(&["--type=full", "backup"]);
    let restores = server.postgres_dir("restores");
    let settings = pgbackrest_settings(
        &server,
        &format!(
            "restore_dir = \"{}\"\npg_ctl = \"{}\"\nrun_as = [\"runuser\", \"-u\", \"postgres\", \"--\"]\n\
             [target]\ndatabases = [\"shop\"]\n[restore_test]\ntimeout_seconds = 120\nrto_minutes = 10\n{checks}",
            restores.display(),
            server.pg_ctl().display()
        ),
    );
    (server, settings, restores)
}

use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbackrest_backup_restores_into_a_scratch_server_passes_its_checks_and_states_its_rto() {
    let (_server, settings, restores) = backed_up_shop(
        "[[restore_test.checks]]\ndatabase = \"shop\"\nname = \"three orders\"\nsql = \"SELECT count(*) = 3 FROM orders\"",
    )
    .await;

    let report = backup_remediator::runbook::pgbackrest_restore::run_test(&settings).await;

    assert_eq!(report.status.as_str(), "passed", "{report:?}");
    assert!(
        report.backup.as_deref().unwrap().ends_with('F'),
        "a full backup's label"
    );
    assert_eq!(report.checks.len(), 1);
    assert!(report.checks[0].passed && report.checks[0].name == "shop: three orders");
    let rto = report.rto.as_ref().unwrap();
    println!(
        "pgbackrest restore to a promoted scratch server: {} ms (RTO {} min)",
        rto.restore_ms, rto.rto_minutes
    );
    assert!(
        rto.met && rto.restore_ms > 0 && rto.rto_minutes == 10.0,
        "{rto:?}"
    );
    assert_eq!(
        std::fs::read_dir(&restores).unwrap().count(),
        0,
        "the scratch server's directory is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_that_fails_a_check_fails_the_test_naming_the_check() {
    let (_server, settings, restores) = backed_up_shop(
        "[[restore_test.checks]]\ndatabase = \"shop\"\nname = \"four orders\"\nsql = \"SELECT count(*) = 4 FROM orders\"",
    )
    .await;

    let report = backup_remediator::runbook::pgbackrest_restore::run_test(&settings).await;

    assert_eq!(report.status.as_str(), "failed", "{report:?}");
    let reason = report.reason.unwrap();
    assert!(
        reason.contains("check \"four orders\" on shop returned false"),
        "{reason}"
    );
    assert_eq!(std::fs::read_dir(&restores).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_a_pg_dump_restore_test_of_a_pgbackrest_target_saying_why() {
    const ADMIN: &str = "sources-admin-token-7c1f";
    let app = crate::support::app::spawn_app_with(
        Backend::Sqlite,
        &format!(
            "[auth]\nadmin_token = \"{ADMIN}\"\n[backup]\nsource = \"pgbackrest\"\n\
             [pgbackrest]\nstanza = \"main\"\n[restore_test]\ntarget_url = \"{}\"\nallow_superuser = true\n",
            crate::support::pg::admin_url()
        ),
    )
    .await;

    let r = app
        .client
        .post(format!("{}/api/v1/restore-tests", app.address))
        .bearer_auth(ADMIN)
        .header("x-actor", "jane.oncall")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let why = body["error"].as_str().unwrap();
    assert!(
        why.contains("backs up with pgbackrest: this restore test restores pg_dump archives"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_service_guards_the_archive_by_itself_and_opens_the_incident() {
    let server = ArchivingServer::start(Archive::Command("false".into()));
    server.generate_wal(2).await;
    server.wait_for_failures().await;
    server.age_ready_segments(20);
    let app = crate::support::app::spawn_app_with(
        Backend::Sqlite,
        &format!(
            "[alerts]\nhandled = [\"PostgreSQLBackupFailed\", \"PostgreSQLBackupStale\", \"{WAL_ARCHIVE_FAILING}\"]\n\
             [wal_archive]\ndatabase_url = \"{}\"\nvolume_path = \"{}\"\ninterval_seconds = 1\n",
            server.url(),
            server.data().display()
        ),
    )
    .await;

    let mut opened = None;
    for _ in 0..100 {
        let page: serde_json::Value = app.api_get("/api/v1/incidents").await.json().await.unwrap();
        opened = page["incidents"].as_array().and_then(|a| {
            a.iter()
                .find(|i| i["alertname"] == WAL_ARCHIVE_FAILING)
                .cloned()
        });
        if opened.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let incident = opened.expect("the guard's loop opened the incident");
    assert_eq!(incident["target"], "link-services");
    assert_eq!(incident["status"], "open");
}
