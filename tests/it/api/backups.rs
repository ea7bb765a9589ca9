//! `/api/v1/backups` and `/api/v1/restore-tests` over HTTP: the manual backup Job the service
//! sends to the test cluster's API server carries its credentials only as `secretKeyRef`s — the
//! Secret holds canary values that must appear nowhere in the request — quotes the database
//! names in its script, is admitted (deploy/'s admission policy, the restricted Pod Security
//! Standard), really runs (pg_dump | openssl | the aws CLI into moto, on the node agent) and is
//! watched to the end with the uploaded objects checked in moto's S3. The restore test runs the
//! real `pg_restore` on a real backup in moto.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::app::{eventually, spawn_app_with, Backend, TestApp, API_TOKEN};
use crate::support::cluster::proxy::KubeProxy;
use crate::support::cluster::{self, fixtures as fx, TestNamespace};
use crate::support::moto::Moto;

pub(super) const ADMIN_TOKEN: &str = "test-admin-token-31c9";
const BUCKET: &str = "link-backups";
const CANARIES: [&str; 4] = [
    "canary-pg-password-a81f",
    "canary-encryption-key-0123456789-b27e",
    "AKIACANARY4D5E6F7A8B",
    "canary-aws-secret-c3d9",
];

pub(super) struct Setup {
    pub app: TestApp,
    /// The namespace of the test cluster the service works in.
    pub ns: TestNamespace,
    /// What the service asked the API server.
    pub kube: KubeProxy,
    pub moto: Moto,
    _dir: tempfile::TempDir,
}

pub(super) async fn setup(backend: Backend, extra: &str) -> Setup {
    setup_with(
        backend,
        &[
            ("postgres-user", "backup_user"),
            ("postgres-password", CANARIES[0]),
            ("s3-bucket", BUCKET),
            ("encryption-key", CANARIES[1]),
            ("aws-access-key-id", CANARIES[2]),
            ("aws-secret-access-key", CANARIES[3]),
        ],
        "[target]\ndatabases = [\"link_users\", \"it's-odd\"]\n",
        extra,
    )
    .await
}

/// The service on `backend` with the backup Secret holding `secret`, `target` (TOML) and
/// `extra` settings.
async fn setup_with(backend: Backend, secret: &[(&str, &str)], target: &str, extra: &str) -> Setup {
    let moto = Moto::start().await;
    moto.create_bucket(BUCKET).await;
    let ns = cluster::shared().await.namespace().await;
    ns.put(fx::secret(secret)).await;
    let kube = KubeProxy::start(ns.cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = ns.kubeconfig_via(&kube.url, dir.path());
    let app = spawn_app_with(
        backend,
        &format!(
            "[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\n\
             [kubernetes]\nnamespace = \"{ns}\"\nkubeconfig = \"{kubeconfig}\"\n\
             [s3]\nendpoint = \"{moto}\"\nforce_path_style = true\nprefix = \"postgres-backups/\"\n\
             {target}{extra}",
            ns = ns.name,
            kubeconfig = kubeconfig.display(),
            moto = moto.url,
        ),
    )
    .await;
    Setup {
        app,
        ns,
        kube,
        moto,
        _dir: dir,
    }
}

impl Setup {
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.app
            .client
            .post(format!("{}{path}", self.app.address))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-actor", "jane.oncall")
            .json(&body)
            .send()
            .await
            .expect("POST")
    }

    /// Polls `path` until `status` is one of `done`, returns the last body.
    async fn wait_status(&self, path: &str, done: &[&str]) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let last: Value = self.app.api_get(path).await.json().await.unwrap();
            if done.iter().any(|d| last["status"] == *d) {
                return last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} did not reach {done:?}: {last:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The manual backup once it has finished one way or another.
    pub async fn backup_finished(&self, id: i64) -> Value {
        self.wait_status(
            &format!("/api/v1/backups/{id}"),
            &["succeeded", "failed", "timed_out", "error"],
        )
        .await
    }

    /// The Jobs the service tried to create, in order.
    pub fn created_jobs(&self) -> Vec<String> {
        self.kube
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
            .filter_map(|r| r.body?["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The Job the service created (and the API server admitted): its name and what was sent.
    pub async fn created_job(&self) -> (String, Value) {
        let admitted = || {
            self.kube
                .requests()
                .into_iter()
                .find(|r| r.method == "POST" && r.path.ends_with("/jobs") && r.status != 0)
        };
        assert!(
            eventually(Duration::from_secs(10), || async { admitted().is_some() }).await,
            "no Job was created"
        );
        let post = admitted().unwrap();
        assert_eq!(
            post.path,
            format!("/apis/batch/v1/namespaces/{}/jobs", self.ns.name)
        );
        assert_eq!(post.status, 201, "the API server admitted the Job");
        let body = post.body.unwrap();
        let name = body["metadata"]["name"].as_str().unwrap().to_owned();
        (name, body)
    }

    /// Lets a held Job's pod exit (a Job running the service's own script ends by itself).
    pub fn finish_job(&self, job: &str, succeeded: bool) {
        self.ns.release(job, succeeded);
    }
}

async fn a_manual_backup_job_takes_credentials_only_from_the_secret_and_is_watched_to_success(
    backend: Backend,
) {
    let s = setup(backend, "").await;

    let resp = s
        .post("/api/v1/backups", json!({"databases": ["it's-odd"]}))
        .await;

    assert_eq!(resp.status(), 202);
    let started: Value = resp.json().await.unwrap();
    assert_eq!(started["status"], "running");
    assert_eq!(
        started["actor"], "admin",
        "the authenticated name, not X-Actor"
    );
    assert_eq!(started["detail"]["on_behalf_of"], "jane.oncall");
    assert_eq!(started["databases"], json!(["it's-odd"]));
    let planned = started["detail"]["planned_object_keys"].clone();
    let key = planned[0].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("postgres-backups/manual/manual-backup-")
            && key.ends_with("-it's-odd.sql.enc"),
        "{key}"
    );
    let (name, job) = s.created_job().await;
    assert_eq!(started["job_name"], name.as_str());
    let text = job.to_string();
    for canary in CANARIES {
        assert!(
            !text.contains(canary),
            "a secret value is in the Job: {canary}"
        );
    }
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/example/backup-remediator-backup-tools:0.1.0"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["restartPolicy"],
        "OnFailure"
    );
    let env = container["env"].as_array().unwrap();
    let mut keys: Vec<(String, String)> = env
        .iter()
        .map(|e| {
            assert!(e.get("value").is_none(), "an inline env value: {e}");
            let r = &e["valueFrom"]["secretKeyRef"];
            assert_eq!(r["name"], "postgres-backup-secret", "{e}");
            (
                e["name"].as_str().unwrap().to_owned(),
                r["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("AWS_ACCESS_KEY_ID", "aws-access-key-id"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-access-key"),
            ("BACKUP_ENCRYPTION_KEY", "encryption-key"),
            ("BACKUP_S3_BUCKET", "s3-bucket"),
            ("PGPASSWORD", "postgres-password"),
            ("POSTGRES_USER", "postgres-user"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let script = container["command"][2].as_str().unwrap();
    assert_eq!(container["command"][0], "/bin/sh");
    assert_eq!(container["command"][1], "-c");
    assert!(script.contains("for DB in 'it'\\''s-odd'; do"), "{script}");
    assert!(
        !script.contains("link_users"),
        "only the requested database"
    );
    assert!(script.contains("STORAGE_CLASS='STANDARD_IA'"));
    assert!(script.contains("pg_dump") && script.contains("--format=custom --compress=6"));
    assert!(script.contains("openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000"));
    assert!(script.contains("-pass env:BACKUP_ENCRYPTION_KEY"));

    // The node really ran the script: with the canary credentials pg_dump cannot log in, the
    // container is restarted up to the back-off limit, and the Job controller fails the Job.
    let id = started["id"].as_i64().unwrap();
    let done = s.backup_finished(id).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(done["object_keys"], json!([]));
    let watched = s
        .kube
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.query.contains("watch=true"));
    assert!(watched, "the Job is watched, not only polled");
}

/// The manual backup end to end: the Job the service creates is admitted, scheduled, and its
/// script really runs on the node — pg_dump of a real database, the real openssl, the aws CLI
/// uploading to moto with the Secret's credentials — and the service verifies the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_backup_really_runs_its_script_and_the_uploaded_object_is_verified() {
    let pg = crate::support::pg::Scratch::create(&["manual"]).await;
    pg.sql(
        "postgres",
        &format!("GRANT pg_read_all_data TO {}", pg.role),
    )
    .await;
    pg.sql(
        &pg.dbs[0],
        "CREATE TABLE t (x int); INSERT INTO t VALUES (42)",
    )
    .await;
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": format!("arn:aws:s3:::{BUCKET}/*")},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{BUCKET}")}]});
    let key = "manual-backup-key-0123456789abcdef0123";
    // The backup user's keys come from the same moto the service uses: made after it starts.
    let s = setup_with(
        Backend::Postgres,
        &[],
        &format!(
            "[target]\nhost = \"127.0.0.1\"\nport = 5432\ndatabases = [\"{}\"]\n",
            pg.dbs[0]
        ),
        "",
    )
    .await;
    let creds = s
        .moto
        .user_with_policy("manual-backup-user", "manual-backup-policy", &policy)
        .await;
    s.ns.put(fx::secret(&[
        ("postgres-user", pg.role.as_str()),
        ("postgres-password", pg.password.as_str()),
        ("s3-bucket", BUCKET),
        ("encryption-key", key),
        ("aws-access-key-id", creds.access_key_id()),
        ("aws-secret-access-key", creds.secret_access_key()),
    ]))
    .await;

    let resp = s.post("/api/v1/backups", json!({})).await;
    assert_eq!(resp.status(), 202);
    let started: Value = resp.json().await.unwrap();
    let done = s.backup_finished(started["id"].as_i64().unwrap()).await;

    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["detail"]["objects_verified"], true, "{done:#}");
    let object_key = done["object_keys"][0].as_str().unwrap().to_owned();
    let object = s
        .moto
        .s3(crate::support::moto::admin_credentials())
        .get_object()
        .bucket(BUCKET)
        .key(&object_key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let dump = backup_remediator::infra::crypto::decrypt(key.as_bytes(), &object).unwrap();
    assert!(
        dump.starts_with(b"PGDMP"),
        "a pg_dump custom-format archive"
    );
}

async fn a_failed_manual_backup_job_is_recorded_as_failed(backend: Backend) {
    let s = setup(backend, "").await;
    let resp = s.post("/api/v1/backups", json!({})).await;
    assert_eq!(resp.status(), 202);
    let started: Value = resp.json().await.unwrap();
    assert_eq!(started["databases"], json!(["link_users", "it's-odd"]));
    let (name, _) = s.created_job().await;

    s.finish_job(&name, false);

    let id = started["id"].as_i64().unwrap();
    let done = s.backup_finished(id).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("BackoffLimitExceeded"),
        "{done:#}"
    );
    assert_eq!(done["object_keys"], json!([]));
}

on_both_stores!(
    a_manual_backup_job_takes_credentials_only_from_the_secret_and_is_watched_to_success,
    a_failed_manual_backup_job_is_recorded_as_failed,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_databases_and_callers_without_the_admin_token_are_refused() {
    let s = setup(Backend::Sqlite, "").await;

    let resp = s
        .post(
            "/api/v1/backups",
            json!({"databases": ["link_users", "x'; rm -rf /"]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown database \"x'; rm -rf /\""),
        "{body}"
    );
    let resp = s
        .post("/api/v1/backups", json!({"databases": "link_users"}))
        .await;
    assert_eq!(resp.status(), 400, "databases must be a list");
    let resp = s
        .post("/api/v1/restore-tests", json!({"database": "nope"}))
        .await;
    assert_eq!(resp.status(), 400);
    for path in ["/api/v1/backups", "/api/v1/restore-tests"] {
        let resp = s
            .app
            .client
            .post(format!("{}{path}", s.app.address))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} needs the admin token");
    }
    assert!(s.created_jobs().is_empty());
    assert_eq!(s.app.api_get("/api/v1/backups/999").await.status(), 404);
    assert_eq!(
        s.app.api_get("/api/v1/restore-tests/999").await.status(),
        404
    );
    assert_eq!(s.app.api_get("/api/v1/restore-tests/x").await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_tests_need_a_scratch_server() {
    let s = setup(Backend::Sqlite, "").await;

    let resp = s.post("/api/v1/restore-tests", json!({})).await;

    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("restore_test.target_url"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_test_started_over_the_api_restores_the_newest_backup() {
    let s = setup(
        Backend::Postgres,
        &format!(
            "[restore_test]\ntarget_url = \"{}\"\nrto_minutes = 60\nallow_superuser = true\n\
             [[restore_test.checks]]\ndatabase = \"link_users\"\nname = \"on the scratch copy\"\n\
             sql = \"select current_database() like 'br_restore_link_users_%'\"\n",
            crate::support::pg::admin_url()
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let backup = crate::support::backup::real_backup(dir.path(), CANARIES[1]);
    s.moto
        .put(
            BUCKET,
            "postgres-backups/postgres-backup-latest_link_users.sql.enc",
            backup,
        )
        .await;

    let resp = s
        .post("/api/v1/restore-tests", json!({"database": "link_users"}))
        .await;

    assert_eq!(resp.status(), 202);
    let started: Value = resp.json().await.unwrap();
    let test = &started["restore_tests"][0];
    assert_eq!(test["status"], "running");
    assert_eq!(test["trigger"], "api");
    assert_eq!(
        test["actor"], "admin",
        "the authenticated name, not X-Actor"
    );
    let id = test["id"].as_i64().unwrap();
    let done = s
        .wait_status(
            &format!("/api/v1/restore-tests/{id}"),
            &["passed", "failed", "error"],
        )
        .await;
    assert_eq!(done["status"], "passed", "{done:#}");
    assert_eq!(
        done["object_key"],
        "postgres-backups/postgres-backup-latest_link_users.sql.enc"
    );
    assert_eq!(done["tables_restored"], done["tables_expected"]);
    assert_eq!(done["detail"]["scratch_dropped"], true);
    // The configured check ran on the scratch database, and the RTO was judged.
    assert_eq!(done["checks"][0]["name"], "on the scratch copy");
    assert_eq!(done["checks"][0]["passed"], true, "{done:#}");
    assert_eq!(done["checks"][0]["value"], "true");
    assert_eq!(done["rto"]["rto_minutes"], 60.0);
    assert_eq!(done["rto"]["met"], true);
    assert!(done["rto"]["restore_ms"].as_i64().unwrap() > 0);
    let doc: Value = s
        .app
        .get("/api/v1/openapi.json")
        .await
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("TestResult", "checks"),
        ("TestResult", "rto"),
        ("CheckResult", "passed"),
        ("RtoResult", "met"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} is not in the OpenAPI document: {:#}",
            schemas[schema]
        );
    }
    let list: Value = s
        .app
        .api_get("/api/v1/restore-tests?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["restore_tests"][0]["id"], id);
    let text = done.to_string();
    for canary in CANARIES {
        assert!(!text.contains(canary));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_test_of_an_object_that_does_not_exist_is_a_404_and_pages_nobody() {
    let s = setup(
        Backend::Sqlite,
        &format!(
            "[restore_test]\nenabled = false\ntarget_url = \"{}\"\nallow_superuser = true\n",
            crate::support::pg::admin_url()
        ),
    )
    .await;
    let real = "postgres-backups/postgres-backup-20261125_020000_link_users.sql.enc";
    s.moto.put(BUCKET, real, b"Salted__x".to_vec()).await;

    let resp = s
        .post(
            "/api/v1/restore-tests",
            json!({"database": "link_users",
                   "object": "postgres-backups/postgres-backup-20261125_0200000_link_users.sql.enc"}),
        )
        .await;

    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    let why = body["error"].as_str().unwrap();
    assert!(
        why.contains("does not exist") && why.contains("0200000"),
        "{why}"
    );
    // Nothing was started, nothing was opened, so nothing pages.
    for (path, list) in [
        ("/api/v1/restore-tests", "restore_tests"),
        ("/api/v1/incidents", "incidents"),
    ] {
        let page: Value = s.app.api_get(path).await.json().await.unwrap();
        assert_eq!(page[list], json!([]), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x_actor_written_in_utf8_is_recorded_as_written_next_to_the_name() {
    let s = setup(Backend::Sqlite, "").await;

    let resp = s
        .app
        .client
        .post(format!("{}/api/v1/backups", s.app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header(
            "x-actor",
            reqwest::header::HeaderValue::from_bytes("José Müller".as_bytes()).unwrap(),
        )
        .json(&json!({"databases": ["link_users"]}))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let started: Value = resp.json().await.unwrap();
    assert_eq!(started["actor"], "admin");
    assert_eq!(started["detail"]["on_behalf_of"], "José Müller");
    let too_long = s
        .app
        .client
        .post(format!("{}/api/v1/backups", s.app.address))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-actor", "x".repeat(101))
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 400);
}
