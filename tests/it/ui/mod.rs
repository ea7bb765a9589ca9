//! The pages a person reads (`/ui/`): over plain HTTP (`http`: security headers, sign-in and
//! its cookie, redirects when signed out, CSRF, reader against admin, the trusted proxy, bad
//! input) and in a real browser (`pages`: headless Chromium over WebDriver, axe-core).

mod browser;
mod http;
mod pages;

use backup_remediator::domain::restore_test::RestoreStart;
use backup_remediator::domain::restore_test::{
    CheckResult, NewRestoreTest, RtoResult, TestResult, TestStatus,
};
use backup_remediator::store::Store;
use chrono::Utc;
use serde_json::json;

/// The admin token the page tests configure (the reader's is the harness's `API_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token-3c9f07";

/// Extra settings: an admin besides the harness's reader.
pub fn with_admin() -> String {
    format!("[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\n")
}

/// A client that shows redirects instead of following them, as the tests check them.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The CSRF token of the first form of `html`.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field on the page: {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// A passed restore test of `database` with two checks and its RTO met, recorded through the
/// store as the restore tester records one.
pub async fn passed_restore_test(store: &Store, database: &str) -> i64 {
    let new = NewRestoreTest {
        database: database.into(),
        target: Some("link-services".into()),
        object_key: None,
        trigger: "schedule".into(),
        actor: "schedule".into(),
        slot: None,
        scratch_database: format!("restore_test_{database}"),
        started_at: Utc::now(),
    };
    let RestoreStart::Started(ids) = store.begin_restore_tests(&[new], 3600).await.unwrap() else {
        panic!("a restore test is running");
    };
    let check = |name: &str| CheckResult {
        name: name.into(),
        sql: "SELECT count(*) > 0 FROM users".into(),
        passed: true,
        value: Some("true".into()),
        reason: None,
        duration_ms: 4,
    };
    let result = TestResult {
        status: TestStatus::Passed,
        object_key: Some(format!(
            "postgres-backups/postgres-backup-20261124_020000_{database}.sql.enc"
        )),
        finished_at: Some(Utc::now()),
        duration_ms: Some(8200),
        tables_expected: Some(12),
        tables_restored: Some(12),
        rows_restored: Some(48_210),
        checks: vec![check("users exist"), check("orders are recent")],
        rto: Some(RtoResult::new(30.0, 6100)),
        detail: json!({}),
        ..Default::default()
    };
    store.finish_restore_test(ids[0], &result).await.unwrap();
    ids[0]
}
