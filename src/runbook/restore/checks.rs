//! What makes a restored backup good enough beyond "it restores": `restore_test.checks`, named
//! SQL queries per database run on the restored scratch database (each must return exactly one
//! boolean `true`: e.g. the newest row of a busy table is under 26 h old), and
//! `restore_test.rto_minutes`, the longest the restore phase (download, decrypt, pg_restore) may
//! take. A check that returns false, NULL, a non-boolean or anything but one value, or fails,
//! fails the test with its reason; so does a restore slower than the RTO.

use std::time::{Duration, Instant};

use sqlx::{Column, ConnectOptions, Connection, Executor, Row, TypeInfo};

use super::{PgTarget, Problem, TestResult};
use crate::config::{RestoreCheck, RestoreTestSettings};
use crate::domain::restore_test::{CheckResult, RtoResult};

/// Deadline of one check's query.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// The checks configured for `database`.
pub fn checks_for<'a>(cfg: &'a RestoreTestSettings, database: &str) -> Vec<&'a RestoreCheck> {
    cfg.checks
        .iter()
        .filter(|c| c.database == database)
        .collect()
}

/// Runs each check on the restored database `db`, each in a read-only transaction that is rolled
/// back. A check never stops the others.
pub async fn run_checks(
    target: &PgTarget,
    db: &str,
    checks: &[&RestoreCheck],
) -> Result<Vec<CheckResult>, Problem> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = target.options(db).connect().await.map_err(|e| {
        Problem::test(format!(
            "cannot connect to the scratch database {db} to run the restore checks: {e}"
        ))
    })?;
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        let start = Instant::now();
        let verdict = run_one(&mut conn, &check.sql).await;
        let duration_ms = i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (passed, value, reason) = match verdict {
            Ok(v) if v == "true" => (true, Some(v), None),
            Ok(v) => {
                let why = format!("returned {v}, not true");
                (false, Some(v), Some(why))
            }
            Err(e) => (false, None, Some(e)),
        };
        results.push(CheckResult {
            name: check.name.clone(),
            sql: check.sql.clone(),
            passed,
            value,
            reason,
            duration_ms,
        });
    }
    let _ = conn.close().await;
    Ok(results)
}

/// Runs one query; `Ok` with what it returned in words, `Err` with why it could not.
async fn run_one(conn: &mut sqlx::PgConnection, sql: &str) -> Result<String, String> {
    conn.execute("BEGIN READ ONLY")
        .await
        .map_err(|e| format!("could not start a transaction: {e}"))?;
    let timeout = format!(
        "SET LOCAL statement_timeout = {}",
        CHECK_TIMEOUT.as_millis()
    );
    let rows = match conn.execute(timeout.as_str()).await {
        Ok(_) => conn
            .fetch_all(sqlx::query(sql))
            .await
            .map_err(|e| format!("failed: {e}")),
        Err(e) => Err(format!("could not set the statement timeout: {e}")),
    };
    // Whatever the check did, it leaves nothing behind.
    let _ = conn.execute("ROLLBACK").await;
    let rows = rows?;
    let [row] = rows.as_slice() else {
        return Ok(format!("{} rows", rows.len()));
    };
    if row.columns().len() != 1 {
        return Ok(format!("{} columns", row.columns().len()));
    }
    let kind = row.columns()[0].type_info().name().to_ascii_lowercase();
    if kind != "bool" {
        return Ok(format!("a value of type {kind}, not a boolean"));
    }
    let value: Option<bool> = row
        .try_get(0)
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(match value {
        Some(true) => "true".to_owned(),
        Some(false) => "false".to_owned(),
        None => "NULL".to_owned(),
    })
}

/// "31.0 s", or "0.060 s" under a second.
fn seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.3} s")
    }
}

/// Records the checks and the RTO in `out`; a failed check or a slow restore fails the test
/// (the backup is not good enough), with every reason in one sentence.
pub fn judge(
    out: &mut TestResult,
    cfg: &RestoreTestSettings,
    database: &str,
    restore: Duration,
    checks: Vec<CheckResult>,
) -> Result<(), Problem> {
    let mut reasons: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            format!(
                "check {:?} on {database} {}",
                c.name,
                c.reason.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    out.checks = checks;
    if cfg.rto_minutes > 0.0 {
        let rto = RtoResult::new(
            cfg.rto_minutes,
            i64::try_from(restore.as_millis()).unwrap_or(i64::MAX),
        );
        if !rto.met {
            reasons.insert(
                0,
                format!(
                    "the restore took {}, longer than restore_test.rto_minutes = {} ({})",
                    seconds(restore.as_secs_f64()),
                    cfg.rto_minutes,
                    seconds(cfg.rto_minutes * 60.0)
                ),
            );
        }
        out.rto = Some(rto);
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Problem::backup(reasons.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rto_minutes: f64) -> RestoreTestSettings {
        let mut s = crate::config::Settings::from_toml("").unwrap().restore_test;
        s.rto_minutes = rto_minutes;
        s
    }

    fn check(name: &str, passed: bool, reason: Option<&str>) -> CheckResult {
        CheckResult {
            name: name.into(),
            sql: "select true".into(),
            passed,
            value: None,
            reason: reason.map(str::to_owned),
            duration_ms: 1,
        }
    }

    #[test]
    fn a_slow_restore_or_a_failed_check_fails_the_test_naming_each_reason() {
        let mut out = TestResult::default();
        let ok = judge(
            &mut out,
            &cfg(0.5),
            "app",
            Duration::from_secs(29),
            vec![check("fresh", true, None)],
        );
        assert_eq!(ok, Ok(()));
        assert_eq!(out.rto.as_ref().map(|r| r.met), Some(true));

        let mut out = TestResult::default();
        let err = judge(
            &mut out,
            &cfg(0.5),
            "app",
            Duration::from_secs(31),
            vec![
                check("fresh", false, Some("returned false, not true")),
                check("count", true, None),
            ],
        )
        .unwrap_err();
        assert!(err.backup_at_fault);
        assert_eq!(
            err.reason,
            "the restore took 31.0 s, longer than restore_test.rto_minutes = 0.5 (30.0 s); \
             check \"fresh\" on app returned false, not true"
        );
        assert_eq!(out.checks.len(), 2);
        assert!(!out.rto.unwrap().met);

        let mut out = TestResult::default();
        assert_eq!(
            judge(
                &mut out,
                &cfg(0.0),
                "app",
                Duration::from_secs(3600),
                vec![]
            ),
            Ok(())
        );
        assert_eq!(out.rto, None, "no RTO configured, none judged");
    }
}
