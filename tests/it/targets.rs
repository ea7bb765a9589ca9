//! Targets, end to end: one service guarding two backups ("billing" and "shop", each its own
//! namespace, backup role, Secret, CronJob, databases and S3 prefix) behind one Alertmanager.
//! An alert acts only on the target its labels name; an alert that names none is stored,
//! escalated and changes nothing anywhere. Real parts: PostgreSQL (two backup roles, four
//! databases), moto's S3 and IAM, the real `pg_dump` and `openssl enc`; the Kubernetes API is the
//! stand-in, with objects in both namespaces.

use std::time::Duration;

use backup_remediator::app::startup::Application;
use backup_remediator::config::Settings;
use serde_json::{json, Value};

use crate::support::cluster::{self, fixtures as fx, proxy::KubeProxy, TestNamespace};
use crate::support::world::{step, DropRole, LIVE, ROLE_GONE_LOG};
use crate::support::{backup, moto, pg};

const BUCKET: &str = "fleet-backups";
const HOOK: &str = "targets-hook-token";
const API: &str = "targets-api-token";

/// One target's side of the world.
struct Side {
    name: &'static str,
    /// Its namespace in the test cluster (the alert's `namespace` label is the target's name).
    ns: TestNamespace,
    /// The backup role its Secret names (absent until the service repairs it).
    role: String,
    password: String,
    key: String,
    dbs: Vec<String>,
    prefix: String,
    _pg: pg::Scratch,
    _role: DropRole,
}

/// Two targets behind one service.
struct Fleet {
    base: String,
    client: reqwest::Client,
    /// What the service asked the API server, as its ServiceAccount.
    kube: KubeProxy,
    moto: moto::Moto,
    billing: Side,
    shop: Side,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn side(name: &'static str, moto: &moto::Moto) -> Side {
    let ns = cluster::shared().await.namespace().await;
    let scratch = pg::Scratch::create(&[&format!("{name}_a"), &format!("{name}_b")]).await;
    let role = format!(
        "gone_{name}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let key = format!("{name}-encryption-key-0123456789abcdef-0123");
    let prefix = format!("{name}-backups/");
    let creds = moto
        .user_with_policy(
            &format!("{name}-backup-user"),
            &format!("{name}-backup-policy"),
            &json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"],
                 "Resource": format!("arn:aws:s3:::{BUCKET}/{prefix}*")},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{BUCKET}")}]}),
        )
        .await;
    ns.put(fx::secret(&[
        ("postgres-user", role.as_str()),
        ("postgres-password", scratch.password.as_str()),
        ("s3-bucket", BUCKET),
        ("encryption-key", key.as_str()),
        ("aws-access-key-id", creds.access_key_id()),
        ("aws-secret-access-key", creds.secret_access_key()),
    ]))
    .await;
    let mut failed = fx::job(
        "postgres-backup-29002440",
        "printf '%s' \"$FAILED_LOG\"; exit 1",
    );
    failed["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "FAILED_LOG", "value": ROLE_GONE_LOG}));
    ns.put(failed).await;
    ns.put(fx::cronjob(&ns.held())).await;
    ns.put(fx::statefulset(1)).await;
    ns.wait_job("postgres-backup-29002440", "Failed").await;
    Side {
        name,
        ns,
        _role: DropRole(role.clone()),
        role,
        password: scratch.password.clone(),
        key,
        dbs: scratch.dbs.clone(),
        prefix,
        _pg: scratch,
    }
}

fn target_toml(s: &Side) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
match = {{ namespace = "{name}" }}
[targets.kubernetes]
namespace = "{ns}"
[targets.target]
databases = ["{a}", "{b}"]
[targets.s3]
prefix = "{prefix}"
[targets.iam]
user = "{name}-backup-user"
policy = "{name}-backup-policy"
"#,
        name = s.name,
        ns = s.ns.name,
        a = s.dbs[0],
        b = s.dbs[1],
        prefix = s.prefix,
    )
}

impl Fleet {
    async fn start() -> Self {
        backup_remediator::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let moto = moto::Moto::start().await;
        moto.create_bucket(BUCKET).await;
        let billing = side("billing", &moto).await;
        let shop = side("shop", &moto).await;
        let kube = KubeProxy::start(cluster::shared().await).await;
        let kubeconfig = billing.ns.kubeconfig_via(&kube.url, dir.path());
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, LIVE).unwrap();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
[database]
url = "sqlite:{store}"
[auth]
webhook_token = "{HOOK}"
api_token = "{API}"
[remediation]
policy_file = "{policy}"
admin_database_url = "{admin}"
job_deadline_seconds = 60
[probes]
deadline_ms = 30000
enabled = ["backup_job", "secret", "database", "s3", "encryption"]
[kubernetes]
kubeconfig = "{kube}"
[target]
host = "127.0.0.1"
port = 5432
connect_timeout_ms = 2000
[s3]
endpoint = "{moto}"
force_path_style = true
[iam]
endpoint = "{moto}"
access_key_id = "{id}"
secret_access_key = "{secret}"
[watchdog]
enabled = false
{billing}{shop}"#,
            store = dir.path().join("incidents.sqlite").display(),
            policy = policy.display(),
            admin = pg::admin_url(),
            kube = kubeconfig.display(),
            moto = moto.url,
            id = moto::admin_credentials().access_key_id(),
            secret = moto::admin_credentials().secret_access_key(),
            billing = target_toml(&billing),
            shop = target_toml(&shop),
        );
        let settings = Settings::from_toml(&toml).unwrap();
        let app = Application::build(settings).await.expect("service starts");
        let base = format!("http://{}", app.local_addr());
        let task = tokio::spawn(async move {
            app.run_until(std::future::pending()).await.ok();
        });
        Fleet {
            base,
            client: reqwest::Client::new(),
            kube,
            moto,
            billing,
            shop,
            dir,
            task,
        }
    }

    /// Posts the backup alert labelled `namespace = ns`; the incident id.
    async fn alert(&self, ns: &str, fingerprint: &str) -> i64 {
        let body = json!({
            "receiver": "backup-remediator", "status": "firing", "version": "4", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "externalURL": "http://alertmanager:9093",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "alerts": [{"status": "firing",
                "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical", "namespace": ns},
                "annotations": {}, "startsAt": "2026-11-24T02:30:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "", "fingerprint": fingerprint}]
        });
        let resp = self
            .client
            .post(format!("{}/webhook/alertmanager", self.base))
            .bearer_auth(HOOK)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
            .as_i64()
            .unwrap()
    }

    async fn api(&self, path: &str) -> Value {
        self.client
            .get(format!("{}/api/v1/{path}", self.base))
            .bearer_auth(API)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_for(&self, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..900 {
            last = self.api(&format!("incidents/{id}")).await;
            if done(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {what} within 90 s: {last:#}");
    }

    /// The Jobs the service created in `side`'s namespace.
    fn jobs_in(&self, side: &Side) -> Vec<String> {
        let ns = &side.ns.name;
        self.kube
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with(&format!("/namespaces/{ns}/jobs")))
            .filter_map(|r| r.body?["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Paths of every change the service made in `side`'s namespace.
    fn writes_in(&self, side: &Side) -> Vec<String> {
        let ns = &side.ns.name;
        self.kube
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .filter(|r| r.path.contains(&format!("/namespaces/{ns}/")))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    async fn wait_for_job_in(&self, side: &Side, incident: i64) -> String {
        let ns = &side.ns.name;
        for _ in 0..600 {
            if let Some(j) = self.jobs_in(side).into_iter().next() {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let now = self.api(&format!("incidents/{incident}")).await;
        panic!("no backup Job in {ns} within 60 s: {now:#}");
    }

    /// What the target's backup Job does: pg_dump of each database as its role with the
    /// Secret's password, the real openssl, uploaded under its prefix.
    async fn run_backup(&self, s: &Side) {
        for db in &s.dbs {
            let bytes =
                backup::dump_with_password(self.dir.path(), &s.role, &s.password, db, &s.key);
            let key = format!(
                "{}postgres-backup-{}-{db}.sql.enc",
                s.prefix,
                uuid::Uuid::new_v4().simple()
            );
            self.moto.put(BUCKET, &key, bytes).await;
        }
    }

    /// Remediates `s` end to end: its alert, its role repaired, one Job in its namespace whose
    /// backup lands under its prefix; the incident.
    async fn remediate(&self, s: &Side, fingerprint: &str) -> Value {
        let id = self.alert(s.name, fingerprint).await;
        let job = self.wait_for_job_in(s, id).await;
        assert!(role_exists(&s.role).await, "{}'s role was created", s.name);
        self.run_backup(s).await;
        s.ns.release(&job, true);
        self.wait_for(id, "an outcome", |i| i["status"] != "open")
            .await
    }
}

async fn role_exists(role: &str) -> bool {
    crate::support::world::role_exists(role).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_repairs_only_the_target_it_names_and_proves_it_there() {
    let f = Fleet::start().await;
    assert!(!role_exists(&f.billing.role).await && !role_exists(&f.shop.role).await);

    let billing = f.remediate(&f.billing, "b111111111111111").await;

    assert_eq!(billing["status"], "remediated", "{billing:#}");
    assert_eq!(billing["target"], "billing");
    assert_eq!(billing["diagnosis"]["scenario"], "authentication");
    assert_eq!(
        f.jobs_in(&f.billing).len(),
        1,
        "one Job, in billing's namespace"
    );
    let verify = step(&billing, "verify_backup");
    let objects = verify["output"]["objects"].to_string();
    assert!(objects.contains("billing-backups/"), "{verify:#}");
    assert!(!objects.contains("shop-backups/"), "{verify:#}");
    assert!(
        step(&billing, "repair_backup_role")["target"]
            .as_str()
            .is_some_and(|t| t.ends_with(&format!(
                "/backup-role/{}/postgres-backup-secret",
                f.billing.ns.name
            ))),
        "{billing:#}"
    );
    assert!(
        f.writes_in(&f.shop).is_empty(),
        "shop untouched: {:?}",
        f.writes_in(&f.shop)
    );
    assert!(!role_exists(&f.shop.role).await, "shop's role untouched");
    assert!(
        !billing.to_string().contains(&f.billing.password),
        "the Secret's password is nowhere in the record"
    );

    // The same for shop, and billing stays as it was.
    let billing_writes = f.writes_in(&f.billing).len();
    let shop = f.remediate(&f.shop, "5111111111111111").await;
    assert_eq!(shop["status"], "remediated", "{shop:#}");
    assert_eq!(shop["target"], "shop");
    assert_eq!(f.jobs_in(&f.shop).len(), 1);
    assert!(step(&shop, "verify_backup")["output"]["objects"]
        .to_string()
        .contains("shop-backups/"));
    assert_eq!(
        f.writes_in(&f.billing).len(),
        billing_writes,
        "billing untouched"
    );
    assert_eq!(f.jobs_in(&f.billing).len(), 1);

    // The list filters by target.
    let listed = f.api("incidents?target=shop").await;
    let ids: Vec<i64> = listed["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [shop["id"].as_i64().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_for_a_namespace_no_target_matches_is_stored_escalated_and_changes_nothing() {
    let f = Fleet::start().await;

    let id = f.alert("payments", "0111111111111111").await;
    let incident = f
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;

    assert_eq!(incident["status"], "escalated", "{incident:#}");
    assert_eq!(incident["target"], Value::Null);
    let d = &incident["diagnosis"];
    assert_eq!(d["scenario"], "no_target");
    let summary = d["summary"].as_str().unwrap();
    for needle in [
        "no target matched",
        "namespace=\"payments\"",
        "billing (namespace=\"billing\")",
        "shop (namespace=\"shop\")",
    ] {
        assert!(summary.contains(needle), "{needle:?} in {summary}");
    }
    assert!(
        incident["findings"].as_array().unwrap().is_empty(),
        "no probe ran"
    );
    let names: Vec<&str> = incident["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["escalate"], "planned with no action");
    assert!(
        f.kube.requests().iter().all(|r| r.method == "GET"),
        "nothing changed: {:?}",
        f.kube.requests()
    );
    assert!(!role_exists(&f.billing.role).await && !role_exists(&f.shop.role).await);
    let opened = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "opened")
        .unwrap();
    assert_eq!(
        opened["detail"]["unmatched"]["labels"]["namespace"],
        "payments"
    );
    let metrics = f
        .client
        .get(format!("{}/metrics", f.base))
        .bearer_auth(API)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("backup_remediator_alerts_unmatched_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_target_config_no_longer_acts_on_an_alert_for_another_namespace() {
    // The configuration every existing user has (no [[targets]]), under a live policy, with
    // The one target's backup role gone: an alert for billing must not repair it.
    let role = format!("gone_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _cleanup = DropRole(role.clone());
    let w = crate::support::world::World::builder()
        .backup_role_gone(&role)
        .job_failed_with_logs(ROLE_GONE_LOG)
        .policy(LIVE)
        .build()
        .await;
    let body = json!({
        "receiver": "backup-remediator", "status": "firing", "version": "4", "groupKey": "{}:{}",
        "truncatedAlerts": 0, "externalURL": "", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {},
        "alerts": [{"status": "firing",
            "labels": {"alertname": "PostgreSQLBackupFailed", "severity": "critical",
                       "namespace": "billing", "cronjob": "billing-pg-backup"},
            "annotations": {}, "startsAt": "2026-11-24T02:30:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": "b111111111111112"}]
    });
    let resp = w
        .client
        .post(format!("{}/webhook/alertmanager", w.base))
        .bearer_auth(crate::support::world::HOOK)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap();

    let incident = w
        .wait_for(id, "an outcome", |i| i["status"] != "open")
        .await;

    assert_eq!(incident["status"], "escalated", "{incident:#}");
    assert_eq!(incident["target"], Value::Null);
    assert_eq!(incident["diagnosis"]["scenario"], "no_target");
    assert!(
        incident["diagnosis"]["summary"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "{ns} (namespace=\"{ns}\" (or no such label))",
                ns = w.kube.namespace()
            )),
        "{incident:#}"
    );
    assert!(w.kube.writes().is_empty(), "{:?}", w.kube.writes());
    assert!(
        !role_exists(&role).await,
        "the one target's role was not touched"
    );
}

#[test]
fn the_binary_refuses_to_start_on_a_bad_target_naming_the_entry_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let two = |second: &str| {
        format!(
            "[[targets]]\nname = \"billing\"\nmatch = {{ namespace = \"billing\" }}\n\n[[targets]]\n{second}\n"
        )
    };
    let cases = [
        (
            two("name = \"shop\"\nmatch = { namespace = \"shop\" }\n[targets.kubernetes]\nnamespacee = \"shop\""),
            "targets[1] (\"shop\").kubernetes.namespacee: unknown key",
        ),
        (
            two("name = \"billing\"\nmatch = { namespace = \"shop\" }"),
            "targets[1] (\"billing\").name: the name is already used by targets[0]",
        ),
        (
            two("name = \"shop\"\nmatch = { namespace = \"billing\" }"),
            "targets[1] (\"shop\").match: targets[0] (\"billing\") has the same match",
        ),
        (
            two("name = \"shop\""),
            "targets[1] (\"shop\").match: needed when there is more than one target",
        ),
        (
            two("name = \"shop\"\nmatch = { namespace = \"\" }"),
            "targets[1] (\"shop\").match.namespace: an empty label name or value",
        ),
        (
            two("name = \"shop\"\nmatch = { namespace = \"shop\" }\n[targets.policy]\nactions.restart_primary.mode = \"auto\""),
            "actions.restart_primary.mode: can only be \"approve\" or \"never\"",
        ),
    ];
    for (i, (toml, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_backup-remediator"));
        cmd.current_dir(dir.path())
            .args([
                "serve",
                "--insecure-no-auth",
                "--listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&path)
            .env_remove("DATABASE_URL")
            .stdin(std::process::Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("BR_") {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("case {i}: the binary started with a bad target config:\n{toml}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i}");
        assert!(
            stderr.contains(want),
            "case {i}: wanted {want:?} in:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn an_incident_opened_before_targets_stays_its_backups_and_the_no_target_remediator_changes_nothing(
) {
    use backup_remediator::domain::plan::{Decision, PlannedStep, StepKind};
    use backup_remediator::domain::policy::Policy;
    use backup_remediator::workflow::engine::{Engine, Examiner};
    use backup_remediator::workflow::remediation::Remediator;

    use crate::support::app::{fresh_store, Backend};
    use crate::support::incident::new_incident;

    let (_db, store) = fresh_store(Backend::Sqlite).await;
    let settings =
        std::sync::Arc::new(Settings::from_toml("[probes]\nenabled = [\"secret\"]").unwrap());
    let engine = Engine::new(store.clone(), Examiner::new(settings.clone(), None));

    // Opened by the version before targets: no target, and nothing about routing recorded.
    let legacy = new_incident()
        .fingerprint("1e9ac1e9ac1e9ac1")
        .target(None)
        .detail(json!({ "receiver": "backup-remediator" }))
        .open(&store)
        .await;
    let report = engine.diagnose(legacy).await.unwrap().expect("diagnosed");
    assert_ne!(
        report.diagnosis.scenario.as_str(),
        "no_target",
        "{report:?}"
    );
    assert_eq!(
        report.findings.len(),
        1,
        "the configured backup's probes ran"
    );

    // Routed to no target by intake: no probe, and its remediator changes nothing, whatever
    // plan the incident holds.
    let unmatched = new_incident()
        .fingerprint("0a0a0a0a0a0a0a0a")
        .target(None)
        .detail(json!({ "unmatched": { "reason": "no target matched the alert's labels" } }))
        .open(&store)
        .await;
    let report = engine
        .diagnose(unmatched)
        .await
        .unwrap()
        .expect("diagnosed");
    assert_eq!(report.diagnosis.scenario.as_str(), "no_target");
    assert!(report.findings.is_empty());
    let plan = [
        PlannedStep {
            group: 1,
            kind: StepKind::Action,
            name: "repair_backup_role".parse().unwrap(),
            target: "postgres/127.0.0.1:5432/backup-role".into(),
            decision: Decision::Auto,
            reason: "a plan the incident should never have".into(),
        },
        PlannedStep {
            group: 2,
            kind: StepKind::Escalate,
            name: "escalate".parse().unwrap(),
            target: "on-call".into(),
            decision: Decision::Auto,
            reason: "no target".into(),
        },
    ];
    assert!(store
        .save_plan(unmatched, &plan, &json!({}), chrono::Utc::now())
        .await
        .unwrap());
    let claim = store
        .claim(unmatched, "r", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let remediator = Remediator::new(
        store.clone(),
        settings,
        std::sync::Arc::new(Policy::from_toml(LIVE).unwrap()),
        None,
        "r".into(),
    )
    .for_target(backup_remediator::metrics::NO_TARGET);

    remediator.remediate(unmatched, &claim).await.unwrap();

    let steps = store.steps(unmatched).await.unwrap();
    assert_eq!(steps[0].state.as_str(), "interrupted", "{steps:?}");
    assert!(
        steps[0].reason.contains("names no configured target"),
        "{steps:?}"
    );
    let incident = store.get_incident(unmatched).await.unwrap().unwrap();
    assert_eq!(incident.status.as_str(), "escalated");
}
