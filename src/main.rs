//! The `backup-remediator` command: serve, migrate, and read incidents from the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use backup_remediator::app::startup::{self, Application};
use backup_remediator::app::telemetry;
use backup_remediator::cli::{approvals as approval_client, report};
use backup_remediator::config::{LogFormat, Overrides, Settings};
use backup_remediator::domain::incident::{Incident, IncidentStatus};
use backup_remediator::store::IncidentFilter;
use clap::{Parser, Subcommand};

/// Diagnoses and safely remediates failed PostgreSQL backups from Alertmanager alerts.
#[derive(Debug, Parser)]
#[command(name = "backup-remediator", version, about)]
struct Cli {
    /// A TOML config file layered over the built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Incident store: postgres://… or sqlite:PATH. Default: DATABASE_URL, then ./data/*.sqlite.
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: webhook receiver, REST API, metrics.
    Serve {
        /// Address to listen on (default 0.0.0.0:9095; 127.0.0.1:9095 with --insecure-no-auth).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Start without webhook and read credentials, on loopback only. Write endpoints still
        /// need an admin credential. For a laptop only.
        #[arg(long)]
        insecure_no_auth: bool,
        /// With --insecure-no-auth, accept a --listen address other than loopback.
        #[arg(long, requires = "insecure_no_auth")]
        insecure_no_auth_on_network: bool,
    },
    /// Tokens for the configuration.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Apply the store's migrations and exit.
    Migrate,
    /// Run every probe and the diagnosis for an alert, print the report and the plan the policy
    /// would allow; change nothing.
    Replay {
        /// An Alertmanager webhook payload (JSON), e.g. saved from a real notification.
        alert: PathBuf,
        /// Print JSON instead of a report.
        #[arg(long)]
        json: bool,
    },
    /// Run one probe and print its finding.
    Probe {
        /// backup_metrics, backup_job, secret, database, primary, disk, s3, iam or encryption.
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Read incidents from the store.
    Incidents {
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Restore the newest backup of each database into a scratch database, check it, drop it.
    RestoreTest {
        /// The target whose backups to test (required when several are configured).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// Only this configured database.
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
        /// Restore this S3 key instead of the newest backup (with --database).
        #[arg(long, value_name = "KEY")]
        object: Option<String>,
        /// Print JSON instead of a report.
        #[arg(long)]
        json: bool,
    },
    /// Launch the runbook's manual backup Job and watch it to the end.
    Backup {
        /// The target to back up (required when several are configured).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
        /// A configured database (repeatable); default: all of them.
        #[arg(long = "database", value_name = "NAME")]
        databases: Vec<String>,
        /// Print JSON instead of a report.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Read a token from stdin and print its SHA-256 (hex) for auth.admins / auth.readers.
    Hash,
}

#[derive(Debug, Subcommand)]
enum IncidentsCommand {
    /// List incidents, newest first.
    List {
        /// open, resolved, escalated or remediated.
        #[arg(long)]
        status: Option<IncidentStatus>,
        /// Only incidents routed to this target.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one incident with its timeline.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Approve a step waiting for a person, through a running service's API (admin token from
    /// BR_ADMIN_TOKEN). Exit codes: 3 service unreachable or failing, 4 auth, 5 not found,
    /// 6 conflict (not waiting, incident not open, already decided).
    Approve(DecideArgs),
    /// Reject a step waiting for a person (as `approve`); the plan moves on.
    Reject(DecideArgs),
}

#[derive(Debug, clap::Args)]
struct DecideArgs {
    /// Incident id.
    id: i64,
    /// Step id (the `id` in the incident's `actions`).
    step: i64,
    /// Why, in a sentence (kept on the timeline).
    #[arg(long)]
    comment: Option<String>,
    /// The running service.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9095")]
    url: String,
    /// On whose behalf (sent as X-Actor, recorded next to the token's name, which is who
    /// decides); default: the OS user name.
    #[arg(long)]
    actor: Option<String>,
    /// Print the decided step as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            e.downcast_ref::<approval_client::ClientError>()
                .map_or(ExitCode::FAILURE, |c| ExitCode::from(c.exit_code()))
        }
    }
}

/// The OS user running the command (what `whoami` prints), else "cli".
fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "cli".to_owned())
}

/// `incidents approve|reject`: the decision through the running service's API.
async fn decide(args: DecideArgs, approve: bool) -> anyhow::Result<()> {
    let token = std::env::var("BR_ADMIN_TOKEN").unwrap_or_default();
    let actor = args.actor.unwrap_or_else(os_user);
    let step = approval_client::decide(&approval_client::DecisionRequest {
        url: &args.url,
        token: &token,
        actor: &actor,
        incident: args.id,
        step: args.step,
        comment: args.comment.as_deref(),
        approve,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&step)?);
    } else {
        println!("{}, on behalf of {actor}", approval_client::summary(&step));
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Token { command } = &cli.command {
        // Needs no configuration: it only hashes what it reads.
        return token(command);
    }
    let (listen, insecure, on_network) = match &cli.command {
        Command::Serve {
            listen,
            insecure_no_auth,
            insecure_no_auth_on_network,
        } => (*listen, *insecure_no_auth, *insecure_no_auth_on_network),
        _ => (None, false, false),
    };
    let overrides = Overrides {
        listen,
        database_url: cli.database_url.clone(),
        log_format: cli.log_format,
        insecure_no_auth: insecure,
        insecure_no_auth_on_network: on_network,
    };
    let mut settings = Settings::load(cli.config.as_deref(), &overrides)?;
    telemetry::init_tracing(settings.log.format, &settings.log.level);

    match cli.command {
        Command::Serve { .. } => {
            let on_network = settings.secure_insecure_listen(listen.is_some())?;
            settings.check_serving()?;
            if on_network {
                for _ in 0..3 {
                    tracing::warn!(listen = %settings.server.listen, "INSECURE: --insecure-no-auth on a network address: anyone who reaches this port can post alerts and read every incident (write endpoints still need an admin credential)");
                }
            } else if settings.auth.insecure_no_auth {
                tracing::warn!(listen = %settings.server.listen, "running with --insecure-no-auth on loopback: local processes can post alerts and read incidents; write endpoints need an admin credential");
            }
            let app = Application::build(settings).await?;
            app.run_until(startup::shutdown_signal()).await?;
        }
        Command::Token { command } => token(&command)?,
        Command::Replay { alert, json } => {
            let body =
                std::fs::read(&alert).with_context(|| format!("reading {}", alert.display()))?;
            let notification = backup_remediator::domain::alert::decode(&body)
                .with_context(|| format!("{} is not an Alertmanager payload", alert.display()))?;
            // Replay changes nothing, not even the S3 probe's test object.
            let examiner = startup::examiner(&settings)
                .await
                .with_read_only(Some(backup_remediator::probes::ReadOnly::Replay));
            let report = examiner.examine(examiner.context()).await;
            let policy = startup::load_policy(&settings)?;
            let alertname = notification
                .alerts
                .first()
                .map_or(backup_remediator::domain::alert::BACKUP_FAILED, |a| {
                    a.name.as_str()
                });
            let plan = backup_remediator::workflow::playbooks::plan(
                alertname,
                &backup_remediator::workflow::playbooks::PlanInput {
                    diagnosis: &report.diagnosis,
                    findings: &report.findings,
                    settings: &settings,
                },
                &policy,
            )
            .unwrap_or_default();
            if json {
                let v = serde_json::json!({ "diagnosis": report.diagnosis, "findings": report.findings,
                                            "plan": plan, "policy": policy.source });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for a in &notification.alerts {
                    println!(
                        "alert    {} ({}) fingerprint {} since {}",
                        a.name,
                        a.status.as_str(),
                        a.fingerprint,
                        a.starts_at
                    );
                }
                print!(
                    "{}",
                    report::render(&report.findings, Some(&report.diagnosis))
                );
                println!("\nplan (policy: {}; nothing was run)", policy.source);
                for s in &plan {
                    println!(
                        "  {}. {:<8} {:<20} {:<9} {}",
                        s.group,
                        s.kind,
                        s.name.as_str(),
                        s.decision,
                        s.reason
                    );
                }
            }
        }
        Command::Probe { name, json } => {
            anyhow::ensure!(
                backup_remediator::domain::finding::is_probe(&name),
                "unknown probe {name:?}; known: {}",
                backup_remediator::domain::finding::NAMES.join(", ")
            );
            let mut one = settings.clone();
            one.probes.enabled = vec![name];
            let examiner = startup::examiner(&one).await;
            let report = examiner.examine(examiner.context()).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report.findings)?);
            } else {
                print!("{}", report::render(&report.findings, None));
            }
        }
        Command::RestoreTest {
            target,
            database,
            object,
            json,
        } => {
            runbook_cli::restore_test(&settings, target.as_deref(), database, object, json).await?
        }
        Command::Backup {
            target,
            databases,
            json,
        } => runbook_cli::backup(&settings, target.as_deref(), &databases, json).await?,
        Command::Migrate => {
            let store = startup::open_store(&settings)
                .await
                .context("migrating the incident store")?;
            println!("migrations applied ({})", store.backend());
            store.close().await;
        }
        Command::Incidents { command } => incidents(&settings, command).await?,
    }
    Ok(())
}

/// `incidents list|show` read the store directly; `approve|reject` go through the running
/// service's API.
async fn incidents(settings: &Settings, command: IncidentsCommand) -> anyhow::Result<()> {
    let read = match command {
        IncidentsCommand::Approve(args) => return decide(args, true).await,
        IncidentsCommand::Reject(args) => return decide(args, false).await,
        read => read,
    };
    let store = startup::open_store(settings)
        .await
        .context("opening the incident store")?;
    let shown = show_incidents(&store, read).await;
    store.close().await;
    shown
}

async fn show_incidents(
    store: &backup_remediator::store::Store,
    command: IncidentsCommand,
) -> anyhow::Result<()> {
    match command {
        IncidentsCommand::List {
            status,
            target,
            limit,
            json,
        } => {
            let filter = IncidentFilter {
                status,
                target,
                limit: limit.clamp(1, 10_000),
                ..Default::default()
            };
            let list = store
                .list_incidents(&filter)
                .await
                .context("listing incidents")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_table(&list);
            }
        }
        IncidentsCommand::Show { id, json } => {
            let incident = store
                .get_incident(id)
                .await
                .context("reading the incident")?
                .with_context(|| format!("no incident with id {id}"))?;
            let timeline = store.timeline(id).await.context("reading the timeline")?;
            if json {
                let mut v = serde_json::to_value(&incident)?;
                v["diagnosis"] = serde_json::to_value(store.diagnosis(id).await?)?;
                v["findings"] = serde_json::to_value(store.findings(id).await?)?;
                v["timeline"] = serde_json::to_value(&timeline)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_table(std::slice::from_ref(&incident));
                println!();
                let findings = store.findings(id).await.context("reading the findings")?;
                let diagnosis = store.diagnosis(id).await.context("reading the diagnosis")?;
                print!("{}", report::render(&findings, diagnosis.as_ref()));
                println!();
                for e in timeline {
                    println!(
                        "{}  {:<12} {}",
                        e.at.format("%Y-%m-%d %H:%M:%S%.3fZ"),
                        e.kind,
                        e.detail
                    );
                }
            }
        }
        IncidentsCommand::Approve(args) => decide(args, true).await?,
        IncidentsCommand::Reject(args) => decide(args, false).await?,
    }
    Ok(())
}

/// `token hash`: the SHA-256 (hex) of the token on stdin, without its final line break.
fn token(command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Hash => {
            let mut token = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut token)
                .context("reading the token from stdin")?;
            let token = token.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!token.is_empty(), "no token on stdin");
            println!(
                "{}",
                hex::encode(backup_remediator::config::sha256(token.as_bytes()))
            );
        }
    }
    Ok(())
}

fn print_table(list: &[Incident]) {
    println!(
        "{:>6}  {:<9}  {:<20}  {:<26}  {:<9}  {:<20}  {:>10}",
        "ID", "STATUS", "TARGET", "ALERT", "SEVERITY", "OPENED", "RE-SENDS"
    );
    for i in list {
        println!(
            "{:>6}  {:<9}  {:<20}  {:<26}  {:<9}  {:<20}  {:>10}",
            i.id,
            i.status.as_str(),
            i.target.as_deref().unwrap_or("(none)"),
            i.alertname,
            i.severity,
            i.opened_at.format("%Y-%m-%d %H:%M:%S"),
            i.renotified_count
        );
    }
}

/// The `restore-test` and `backup` commands.
mod runbook_cli {
    use anyhow::Context;
    use backup_remediator::config::Settings;
    use std::sync::Arc;

    use backup_remediator::app::startup;
    use backup_remediator::domain::restore_test::TestStatus;
    use backup_remediator::runbook::manual_backup::ManualBackups;
    use backup_remediator::runbook::restore::{RestoreTester, TestRequest};
    use backup_remediator::store::Store;

    /// The store and the procedures of the target named `target` (with one target, that one).
    async fn open(
        settings: &Settings,
        target: Option<&str>,
    ) -> anyhow::Result<(Store, Arc<RestoreTester>, Arc<ManualBackups>)> {
        backup_remediator::install_crypto_provider();
        let store = startup::open_store(settings)
            .await
            .context("opening the incident store")?;
        let fleet = startup::runbook_operations(settings, &store).await;
        let runbook = fleet.pick(target)?;
        Ok((store, runbook.restore.clone(), runbook.backups.clone()))
    }

    fn actor() -> String {
        super::os_user()
    }

    /// Runs the tests in the foreground, records them, prints them; fails unless all passed.
    pub async fn restore_test(
        settings: &Settings,
        target: Option<&str>,
        database: Option<String>,
        object: Option<String>,
        json: bool,
    ) -> anyhow::Result<()> {
        let (store, tester, _) = open(settings, target).await?;
        let req = TestRequest {
            database,
            object,
            trigger: "cli".into(),
            actor: actor(),
        };
        let tests = tester.start(&req, None).await?;
        let done = tester.run(tests).await;
        store.close().await;
        if json {
            println!("{}", serde_json::to_string_pretty(&done)?);
        } else {
            for t in &done {
                println!(
                    "#{} {:<20} {:<7} {}",
                    t.id,
                    t.database,
                    t.result.status.as_str(),
                    t.result.object_key.as_deref().unwrap_or("-")
                );
                if let (Some(exp), Some(got)) = (t.result.tables_expected, t.result.tables_restored)
                {
                    println!(
                        "    tables {got}/{exp}, rows {}, archive {} bytes, {} ms",
                        t.result.rows_restored.unwrap_or(0),
                        t.result.archive_bytes.unwrap_or(0),
                        t.result.duration_ms.unwrap_or(0)
                    );
                }
                for c in &t.result.checks {
                    let verdict = if c.passed { "ok" } else { "FAILED" };
                    let what = c.reason.as_deref().or(c.value.as_deref()).unwrap_or("");
                    println!("    check {:?}: {verdict} ({what})", c.name);
                }
                if let Some(rto) = &t.result.rto {
                    println!(
                        "    restore {} ms, RTO {} min: {}",
                        rto.restore_ms,
                        rto.rto_minutes,
                        if rto.met { "met" } else { "MISSED" }
                    );
                }
                if let Some(reason) = &t.result.reason {
                    println!("    {reason}");
                }
                if let Some(i) = t.incident_id {
                    println!("    incident {i} opened");
                }
            }
        }
        let bad = done
            .iter()
            .filter(|t| t.result.status != TestStatus::Passed)
            .count();
        anyhow::ensure!(
            bad == 0,
            "{bad} of {} restore tests did not pass",
            done.len()
        );
        Ok(())
    }

    /// Launches the manual backup Job, watches it, prints the outcome; fails unless it succeeded.
    pub async fn backup(
        settings: &Settings,
        target: Option<&str>,
        databases: &[String],
        json: bool,
    ) -> anyhow::Result<()> {
        let (store, _, backups) = open(settings, target).await?;
        let (record, plan) = backups
            .start(databases, "cli", &actor(), None, None)
            .await?;
        // Without an idempotency key there is always a plan.
        let plan = plan.context("the manual backup has no plan")?;
        eprintln!(
            "Job {} created in {}; watching it",
            plan.job_name, record.namespace
        );
        let done = backups.run(&record, &plan).await;
        store.close().await;
        if json {
            println!("{}", serde_json::to_string_pretty(&done)?);
        } else {
            println!("#{} {} {}", done.id, done.job_name, done.status.as_str());
            for key in &done.object_keys {
                println!("    uploaded {key}");
            }
            if let Some(reason) = &done.reason {
                println!("    {reason}");
            }
        }
        anyhow::ensure!(
            done.status == backup_remediator::domain::manual_backup::BackupStatus::Succeeded,
            "the manual backup did not succeed"
        );
        Ok(())
    }
}
