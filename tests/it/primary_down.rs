//! "Down" means down: the primary is restarted only when no database answers at all (refused,
//! timeout, name resolution). A server that answers — too many connections for the backup role
//! (53300), in recovery (57P03) — is up: the diagnosis does not call it unreachable, no restart
//! is planned, and the precondition re-probed at the gate refuses one with the server's answer.

use std::sync::Arc;
use std::time::Duration;

use backup_remediator::actions::preconditions::{self, Precondition};
use backup_remediator::actions::ActionContext;
use backup_remediator::config::Settings;
use backup_remediator::domain::action::ActionName;
use backup_remediator::domain::alert::BACKUP_FAILED;
use backup_remediator::domain::diagnosis::{diagnose, Diagnosis};
use backup_remediator::domain::finding::{Finding, ProbeOutput, Signal};
use backup_remediator::domain::plan::{Decision, Step, StepKind, StepState};
use backup_remediator::domain::policy::Policy;
use backup_remediator::probes::database::Database;
use backup_remediator::probes::{BackupSecret, Probe, ProbeContext};
use backup_remediator::workflow::playbooks::{plan, PlanInput};
use sqlx::Connection;

use crate::support::{pg, procs};

fn settings(port: u16, dbs: &[String]) -> Arc<Settings> {
    let dbs = dbs
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Arc::new(
        Settings::from_toml(&format!(
            "[target]\nhost = \"127.0.0.1\"\nport = {port}\ndatabases = [{dbs}]\nconnect_timeout_ms = 1500"
        ))
        .unwrap(),
    )
}

/// The action context the gate re-probes with (no Kubernetes: a refusal needs none).
fn action_ctx(settings: Arc<Settings>, secret: BackupSecret) -> ActionContext {
    backup_remediator::install_crypto_provider();
    let probes =
        ProbeContext::new(settings.clone(), None, reqwest::Client::new()).with_secret(Ok(secret));
    ActionContext {
        settings,
        policy: Arc::new(Policy::defaults(false)),
        kube: None,
        probes: Arc::new(probes),
        incident_id: 1,
    }
}

fn restart_step() -> Step {
    Step {
        id: 2,
        incident_id: 1,
        seq: 2,
        group: 2,
        kind: StepKind::Action,
        name: ActionName::RestartPrimary,
        target: "statefulset/link-services/postgres-primary".into(),
        decision: Decision::Approve,
        state: StepState::Planned,
        reason: String::new(),
        output: serde_json::json!({}),
        decided_by: None,
        decided_at: None,
        started_at: None,
        finished_at: None,
    }
}

/// The database probe now, its diagnosis, and the plan the live default policy makes of it.
async fn look(ctx: &ActionContext) -> (ProbeOutput, Diagnosis, Vec<(ActionName, Decision)>) {
    let out = tokio::time::timeout(Duration::from_secs(20), Database.run(ctx.probes.clone()))
        .await
        .expect("the probe answers");
    let finding = Finding {
        probe: "database".into(),
        status: out.status,
        summary: out.summary.clone(),
        evidence: out.evidence.clone(),
        signals: out.signals.clone(),
        started_at: chrono::Utc::now(),
        duration_ms: 1,
    };
    let findings = [finding];
    let diagnosis = diagnose(&findings);
    let input = PlanInput {
        diagnosis: &diagnosis,
        findings: &findings,
        settings: &ctx.settings,
    };
    let steps = plan(BACKUP_FAILED, &input, &ctx.policy)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.decision))
        .collect();
    (out, diagnosis, steps)
}

fn said(d: &Diagnosis) -> String {
    serde_json::to_string(d).unwrap()
}

/// What a server that answers must lead to: no "unreachable", no restart planned, and a
/// restart refused at the gate with the server's answer (`answer`).
async fn assert_up_and_not_restarted(ctx: &ActionContext, answer: &str) {
    let (out, diagnosis, steps) = look(ctx).await;
    assert!(
        !out.signals.iter().any(Signal::means_primary_down),
        "{:?}",
        out.signals
    );
    assert!(out.summary.contains(answer), "{}", out.summary);
    assert!(
        !said(&diagnosis).contains("unreachable"),
        "{}",
        said(&diagnosis)
    );
    assert!(
        !steps.iter().any(|(n, _)| *n == ActionName::RestartPrimary),
        "{steps:?}"
    );
    match preconditions::check(ctx, &restart_step()).await {
        Precondition::Refuse(why) => assert!(why.contains(answer), "{why}"),
        other => panic!("a restart of a server that answers: {other:?}"),
    }
}

#[tokio::test]
async fn a_backup_role_at_its_connection_limit_is_up_and_the_primary_is_not_restarted() {
    let s = pg::Scratch::create(&["limit_a", "limit_b"]).await;
    s.sql(
        "postgres",
        &format!(
            "GRANT pg_read_all_data TO {r}; ALTER ROLE {r} CONNECTION LIMIT 1",
            r = s.role
        ),
    )
    .await;
    // The one connection the role may have is taken (a stuck pg_dump, say).
    let base = pg::admin_url();
    let base = base
        .rsplit_once("://")
        .unwrap()
        .1
        .split_once('@')
        .unwrap()
        .1;
    let base = base.rsplit_once('/').unwrap().0;
    let _held = sqlx::PgConnection::connect(&format!(
        "postgres://{}:{}@{base}/{}",
        s.role, s.password, s.dbs[0]
    ))
    .await
    .expect("the role's one connection");
    let ctx = action_ctx(
        settings(5432, &s.dbs),
        pg::backup_secret(&s.role, &s.password),
    );

    assert_up_and_not_restarted(&ctx, "too many connections").await;
}

#[tokio::test]
async fn a_closed_port_is_down_and_a_restart_is_offered_under_approval() {
    let s = pg::Scratch::create(&["closed_a"]).await;
    let ctx = action_ctx(
        settings(procs::free_port(), &s.dbs),
        pg::backup_secret(&s.role, &s.password),
    );

    let (out, diagnosis, steps) = look(&ctx).await;

    assert!(
        out.signals
            .iter()
            .any(|x| matches!(x, Signal::DatabaseUnreachable { .. })),
        "{:?}",
        out.signals
    );
    assert!(said(&diagnosis).contains("refused"), "{}", said(&diagnosis));
    assert!(
        steps.contains(&(ActionName::RestartPrimary, Decision::Approve)),
        "{steps:?}"
    );
}

#[tokio::test]
async fn a_server_in_recovery_answers_57p03_and_is_up_so_the_primary_is_not_restarted() {
    let server = pg::PasswordServer::start_in_recovery();
    let ctx = action_ctx(
        settings(server.port, &["postgres".to_owned()]),
        pg::backup_secret("postgres", "recovery-canary-pw"),
    );

    assert_up_and_not_restarted(&ctx, "57P03").await;
}
