//! The world's Kubernetes: a namespace of its own in the test cluster (the real API server, the
//! Job controller, the node agent running the Jobs), reached by the service as its
//! ServiceAccount through a [`KubeProxy`] that records what it asked and can slow it down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::cluster::proxy::{KubeProxy, Recorded};
use crate::support::cluster::{self, TestNamespace};

pub struct WorldKube {
    pub ns: TestNamespace,
    pub proxy: KubeProxy,
    /// The service's kubeconfig: its ServiceAccount, through the proxy.
    pub kubeconfig: PathBuf,
}

impl WorldKube {
    /// A fresh namespace, with deploy/'s expand-pvc and restart-primary components granted in
    /// it (the worlds' policies may allow those actions), and the proxy.
    pub async fn start(dir: &Path) -> WorldKube {
        let cluster = cluster::shared().await;
        let ns = cluster.namespace().await;
        for component in [
            "deploy/components/expand-pvc",
            "deploy/components/restart-primary",
        ] {
            for mut obj in cluster::render(component).unwrap() {
                obj["metadata"]["namespace"] = json!(ns.name);
                ns.put(obj).await;
            }
        }
        let proxy = KubeProxy::start(cluster).await;
        let kubeconfig = ns.kubeconfig_via(&proxy.url, dir);
        WorldKube {
            ns,
            proxy,
            kubeconfig,
        }
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.ns.name
    }

    /// The service's `[kubernetes]` settings (without the section header).
    pub fn settings_toml(&self) -> String {
        format!(
            "namespace = \"{}\"\nkubeconfig = \"{}\"\n",
            self.ns.name,
            self.kubeconfig.display()
        )
    }

    /// Creates or updates `obj` in the namespace (as the admin).
    pub async fn put(&self, obj: Value) -> Value {
        self.ns.put(obj).await
    }

    /// Lets the pod of Job `job` (the CronJob's Jobs wait to be released) exit.
    pub fn finish_job(&self, job: &str, succeeded: bool) {
        self.ns.release(job, succeeded);
    }

    /// Every request the service sent.
    pub fn requests(&self) -> Vec<Recorded> {
        self.proxy.requests()
    }

    /// The requests that change something (not GET).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// The names of the Jobs the service tried to create, in order.
    pub fn created_jobs(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
            .filter_map(|r| r.body?["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// An object of the namespace as the server has it (`kind`: Job, CronJob, Secret, …).
    pub async fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let path = path_of(&self.ns.name, kind, name);
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        self.ns.admin.request::<Value>(req).await.ok()
    }

    /// Deletes an object of the namespace (as the admin).
    pub async fn remove(&self, kind: &str, name: &str) {
        let path = path_of(&self.ns.name, kind, name);
        let req = http::Request::delete(path).body(Vec::new()).unwrap();
        self.ns.admin.request::<Value>(req).await.unwrap();
    }

    pub fn delay(&self, prefix: &str, by: Duration) {
        self.proxy.delay(prefix, by);
    }

    pub fn delay_request(&self, method: &str, prefix: &str, by: Duration) {
        self.proxy.delay_request(method, prefix, by);
    }

    pub fn delay_answer(&self, method: &str, prefix: &str, by: Duration) {
        self.proxy.delay_answer(method, prefix, by);
    }

    pub fn clear_delays(&self) {
        self.proxy.clear_delays();
    }

    /// A client as the service's ServiceAccount, through the proxy.
    pub async fn client(&self) -> kube::Client {
        backup_remediator::install_crypto_provider();
        let file = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

fn path_of(ns: &str, kind: &str, name: &str) -> String {
    match kind {
        "Job" => format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"),
        "CronJob" => format!("/apis/batch/v1/namespaces/{ns}/cronjobs/{name}"),
        "StatefulSet" => format!("/apis/apps/v1/namespaces/{ns}/statefulsets/{name}"),
        "PersistentVolumeClaim" => format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}"),
        "Secret" => format!("/api/v1/namespaces/{ns}/secrets/{name}"),
        "Pod" => format!("/api/v1/namespaces/{ns}/pods/{name}"),
        other => panic!("no path for {other}"),
    }
}
