//! [`WorldBuilder`]: what an end-to-end test breaks, how the service runs and what it may do;
//! `build` puts the real PostgreSQL, moto, Prometheus and a namespace of the test cluster (the
//! real Kubernetes API) in that state and starts the service.

use aws_credential_types::Credentials;
use backup_remediator::app::startup::Application;
use backup_remediator::config::Settings;
use serde_json::json;

use super::kube::WorldKube;
use super::{World, ADMIN, API, BUCKET, HOOK, KEY, PVC};
use crate::support::backup::real_backup;
use crate::support::cluster::fixtures as fx;
use crate::support::{moto, pg, procs, s3_proxy};

/// The one thing broken in a world (at most one: each runbook scenario breaks one).
#[derive(Clone, Copy, PartialEq, Default)]
enum Break {
    #[default]
    Nothing,
    Connection,
    Authentication,
    Storage,
    S3,
    Encryption,
}

/// A world to build: nothing broken, the service in this process on SQLite, as a dry run
/// (no policy file). Each method changes one thing.
#[derive(Clone, Copy, Default)]
pub struct WorldBuilder<'a> {
    broken: Break,
    /// The failed backup Job's pod log.
    job_log: &'a str,
    /// Policy file contents; `None`: no policy file (dry run).
    policy: Option<&'a str>,
    /// More settings (TOML) in the `[remediation]` section or after it.
    remediation: &'a str,
    /// 0: in this process on SQLite; n: n binaries on one PostgreSQL store.
    processes: usize,
    /// The Secret's backup role when the role is gone.
    gone_role: Option<&'a str>,
    /// No service at all: the test drives the library itself on the PostgreSQL store.
    no_service: bool,
    /// Run the freshness watchdog's loop.
    watchdog: bool,
    /// moto reports objects whose key holds `aged<N>h` as N hours old.
    aging_moto: bool,
    /// The backup job exports no metrics (a CronJob that stopped running).
    no_backup_metrics: bool,
    /// The metric's last success is 1 h old (default: 30 h, the failed backup's).
    fresh_backup_metric: bool,
    /// The service's S3 listings fail after this many pages ([`s3_proxy::failing_listings`]).
    listing_fails_after: Option<u32>,
}

impl<'a> WorldBuilder<'a> {
    /// The failed backup Job's pod logged `log`.
    pub fn job_failed_with_logs(mut self, log: &'a str) -> Self {
        self.job_log = log;
        self
    }

    /// The primary is down: not ready, no endpoints, nothing listens on its port.
    pub fn database_down(mut self) -> Self {
        self.broken = Break::Connection;
        self
    }

    /// The Secret names backup role `role`, which does not exist.
    pub fn backup_role_gone(mut self, role: &'a str) -> Self {
        self.broken = Break::Authentication;
        self.gone_role = Some(role);
        self
    }

    /// The data volume is 95% full.
    pub fn volume_full(mut self) -> Self {
        self.broken = Break::Storage;
        self
    }

    /// The Secret names a bucket that does not exist.
    pub fn bucket_gone(mut self) -> Self {
        self.broken = Break::S3;
        self
    }

    /// The Secret's encryption key is 9 bytes.
    pub fn short_encryption_key(mut self) -> Self {
        self.broken = Break::Encryption;
        self
    }

    /// A policy file with `text` (without one, remediation is a dry run).
    pub fn policy(mut self, text: &'a str) -> Self {
        self.policy = Some(text);
        self
    }

    /// More settings (TOML), in the `[remediation]` section or a section of their own after it.
    pub fn remediation(mut self, toml: &'a str) -> Self {
        self.remediation = toml;
        self
    }

    /// `n` service binaries on one PostgreSQL store instead of the service in this process.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = n;
        self
    }

    /// No service: the test drives the library itself on the PostgreSQL store.
    pub fn no_service(mut self) -> Self {
        self.no_service = true;
        self
    }

    /// The freshness watchdog's loop runs (else tests check chosen periods through
    /// [`World::watchdog`]).
    pub fn watchdog(mut self) -> Self {
        self.watchdog = true;
        self
    }

    /// moto reports objects whose key holds `aged<N>h` as N hours old
    /// ([`moto::Moto::start_aging`]).
    pub fn aging_moto(mut self) -> Self {
        self.aging_moto = true;
        self
    }

    /// The backup job exports no metrics.
    pub fn no_backup_metrics(mut self) -> Self {
        self.no_backup_metrics = true;
        self
    }

    /// The backup job's metric reports a success 1 h ago.
    pub fn fresh_backup_metric(mut self) -> Self {
        self.fresh_backup_metric = true;
        self
    }

    /// The service reaches S3 through a proxy whose listings fail after `pages` pages.
    pub fn listing_fails_after(mut self, pages: u32) -> Self {
        self.listing_fails_after = Some(pages);
        self
    }

    /// Puts every system in the state asked for and starts the service.
    pub async fn build(self) -> World {
        backup_remediator::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        // The databases, S3/IAM and Prometheus (whose start and first scrape are mostly waiting)
        // are set up at once; the cluster needs the first two.
        let databases = async {
            let pg = pg::Scratch::create(&["users", "chat", "store"]).await;
            pg.sql(
                "postgres",
                &format!("GRANT pg_read_all_data TO {}", pg.role),
            )
            .await;
            pg
        };
        let kube = WorldKube::start(dir.path()).await;
        let (pg, (moto, job_creds), (prom, prom_url)) = tokio::join!(
            databases,
            self.s3_and_iam(dir.path()),
            self.prometheus(dir.path(), kube.namespace())
        );
        self.kubernetes(&kube, &pg, &job_creds).await;
        let s3_url = match self.listing_fails_after {
            Some(pages) => s3_proxy::failing_listings(moto.url.clone(), pages).await,
            None => moto.url.clone(),
        };
        let toml = self.config(dir.path(), &pg, &moto, &s3_url, &kube, &prom_url);
        let settings = Settings::from_toml(&toml).unwrap();
        let config = dir.path().join("service.toml");
        std::fs::write(&config, &toml).unwrap();
        let mut w = World {
            base: String::new(),
            client: reqwest::Client::new(),
            kube,
            moto,
            _prom: prom,
            pg,
            dir,
            task: None,
            processes: Vec::new(),
            bases: Vec::new(),
            config,
            settings: settings.clone(),
            watchdog: None,
        };
        if self.no_service {
            return w;
        }
        if self.processes == 0 {
            let app = Application::build(settings).await.expect("service starts");
            w.base = format!("http://{}", app.local_addr());
            w.watchdog = Some(app.watchdog());
            w.task = Some(tokio::spawn(async move {
                app.run_until(std::future::pending()).await.ok();
            }));
        } else {
            for _ in 0..self.processes {
                let base = w.start_process().await;
                if w.base.is_empty() {
                    w.base = base;
                }
            }
        }
        w
    }

    /// S3 and IAM: a bucket with a real encrypted backup, the backup user and its policy; the
    /// backup user's credentials.
    async fn s3_and_iam(&self, dir: &std::path::Path) -> (moto::Moto, Credentials) {
        let moto = if self.aging_moto {
            moto::Moto::start_aging().await
        } else {
            moto::Moto::start().await
        };
        moto.create_bucket(BUCKET).await;
        moto.put(
            BUCKET,
            "postgres-backups/postgres-backup-20261124_020000_link_users.sql.enc",
            real_backup(dir, KEY),
        )
        .await;
        let policy = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": format!("arn:aws:s3:::{BUCKET}/postgres-backups/*")},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": format!("arn:aws:s3:::{BUCKET}")}
        ]});
        let job_creds = moto
            .user_with_policy("postgres-backup-user", "postgres-backup-policy", &policy)
            .await;
        (moto, job_creds)
    }

    /// Kubernetes: the Secret, the backup CronJob (its Jobs wait until the test finishes them),
    /// a backup Job that succeeded and a newer one that failed, logging the world's log (both
    /// really run by the node agent), the primary, the volume.
    async fn kubernetes(&self, kube: &WorldKube, pg: &pg::Scratch, job_creds: &Credentials) {
        let user = match (self.broken, self.gone_role) {
            (Break::Authentication, Some(role)) => role,
            _ => pg.role.as_str(),
        };
        let bucket = if self.broken == Break::S3 {
            "link-backups-deleted"
        } else {
            BUCKET
        };
        let key = if self.broken == Break::Encryption {
            "short-key"
        } else {
            KEY
        };
        kube.put(fx::secret(&[
            ("postgres-user", user),
            ("postgres-password", pg.password.as_str()),
            ("s3-bucket", bucket),
            ("encryption-key", key),
            ("aws-access-key-id", job_creds.access_key_id()),
            ("aws-secret-access-key", job_creds.secret_access_key()),
        ]))
        .await;
        kube.put(fx::cronjob(&kube.ns.held())).await;
        kube.put(fx::job(
            "postgres-backup-29001000",
            "echo 'backup completed'",
        ))
        .await;
        kube.ns
            .wait_job("postgres-backup-29001000", "Complete")
            .await;
        // A second apart: the failed Job is plainly the newest.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let mut failed = fx::job(
            "postgres-backup-29002440",
            "printf '%s\\n' \"$FAILED_LOG\"; exit 1",
        );
        failed["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "FAILED_LOG", "value": self.job_log}));
        kube.put(failed).await;
        let primary_ready = self.broken != Break::Connection;
        kube.put(fx::statefulset(i32::from(primary_ready))).await;
        kube.put(fx::primary_pod(primary_ready)).await;
        kube.put(fx::endpoints(if primary_ready {
            &["10.0.0.5"]
        } else {
            &[]
        }))
        .await;
        let class = format!("{}-gp3", kube.namespace());
        kube.put(fx::storage_class(&class, true)).await;
        kube.put(fx::pvc(PVC, &class, "100Gi", true)).await;
        kube.ns.wait_job("postgres-backup-29002440", "Failed").await;
    }

    /// Prometheus scraping the backup's own metrics (last success 30 h ago) and the data
    /// volume's; the daemon and its URL.
    async fn prometheus(&self, dir: &std::path::Path, ns: &str) -> (procs::Daemon, String) {
        let ns = ns.to_owned();
        let used = if self.broken == Break::Storage {
            95.0
        } else {
            40.0
        };
        let hours = if self.fresh_backup_metric { 1 } else { 30 };
        let last = chrono::Utc::now().timestamp() - hours * 3600;
        let backup_metrics = if self.no_backup_metrics {
            String::new()
        } else {
            format!(
                "postgres_backup_last_success_timestamp {last}\npostgres_backup_errors_total 1\n"
            )
        };
        let exporter = procs::exporter(move || {
            let gib = 1024.0f64.powi(3);
            format!(
                "{backup_metrics}kubelet_volume_stats_used_bytes{{namespace=\"{ns}\",persistentvolumeclaim=\"{PVC}\"}} {u}\n\
                 kubelet_volume_stats_capacity_bytes{{namespace=\"{ns}\",persistentvolumeclaim=\"{PVC}\"}} {c}\n",
                u = used * gib,
                c = 100.0 * gib
            )
        })
        .await;
        let (prom, prom_url) = procs::prometheus(dir, &[exporter.to_string()], None, None).await;
        procs::wait_for_series(&prom_url, "kubelet_volume_stats_capacity_bytes").await;
        (prom, prom_url)
    }

    /// The service's configuration (TOML), pointed at all of it. The probes' deadline is six
    /// times the default: no world tests it, and on a loaded machine (2 cores, the suite and
    /// builds beside it) the encryption probe once took over 10 s.
    fn config(
        &self,
        dir: &std::path::Path,
        pg: &pg::Scratch,
        moto: &moto::Moto,
        s3_url: &str,
        kube: &WorldKube,
        prom_url: &str,
    ) -> String {
        let pg_port = if self.broken == Break::Connection {
            procs::free_port()
        } else {
            5432
        };
        let store_url = if self.processes == 0 && !self.no_service {
            format!("sqlite:{}", dir.join("incidents.sqlite").display())
        } else {
            let admin = pg::admin_url();
            format!("{}/{}", admin.rsplit_once('/').unwrap().0, pg.dbs[2])
        };
        let policy_file = match self.policy {
            Some(text) => {
                let path = dir.join("policy.toml");
                std::fs::write(&path, text).unwrap();
                path.display().to_string()
            }
            None => String::new(),
        };
        format!(
            r#"
        [server]
        listen = "127.0.0.1:0"
        [database]
        url = "{store_url}"
        [auth]
        webhook_token = "{HOOK}"
        api_token = "{API}"
        admin_token = "{ADMIN}"
        [remediation]
        policy_file = "{policy_file}"
        admin_database_url = "{admin_url}"
        job_deadline_seconds = 60
        database_wait_seconds = 2
        {remediation}
        [probes]
        deadline_ms = 30000
        [prometheus]
        url = "{prom_url}"
        [kubernetes]
        {kube}
        [target]
        host = "127.0.0.1"
        port = {pg_port}
        databases = ["{db0}", "{db1}"]
        connect_timeout_ms = 2000
        [s3]
        endpoint = "{s3_url}"
        force_path_style = true
        region = "us-east-1"
        [iam]
        endpoint = "{moto}"
        access_key_id = "{admin_id}"
        secret_access_key = "{admin_secret}"
        [watchdog]
        enabled = {watchdog}
        "#,
            watchdog = self.watchdog,
            admin_url = pg::admin_url(),
            remediation = self.remediation,
            kube = kube.settings_toml(),
            db0 = pg.dbs[0],
            db1 = pg.dbs[1],
            moto = moto.url,
            admin_id = moto::admin_credentials().access_key_id(),
            admin_secret = moto::admin_credentials().secret_access_key(),
        )
    }
}
