//! One test's namespace in the test cluster.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::{apply, Cluster};

/// A namespace of its own for one test: it enforces the `restricted` Pod Security Standard
/// and holds what deploy/ gives every target namespace (the service's Role and RoleBinding, the
/// manual-backup ServiceAccount). Left behind when the test ends (the cluster goes with the
/// process).
pub struct TestNamespace {
    pub name: String,
    pub cluster: &'static Cluster,
    /// The cluster admin, for the test's set-up and checks.
    pub admin: kube::Client,
}

impl TestNamespace {
    pub(super) async fn create(cluster: &'static Cluster) -> TestNamespace {
        let name = format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let admin = cluster.admin().await;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                       "pod-security.kubernetes.io/enforce-version": "latest"}}});
        apply::apply(&admin, &ns).await.unwrap();
        for obj in apply::per_namespace() {
            let mut obj = obj.clone();
            obj["metadata"]["namespace"] = json!(name);
            apply::apply(&admin, &obj).await.unwrap();
        }
        TestNamespace {
            name,
            cluster,
            admin,
        }
    }

    /// The `[kubernetes]` settings that point the service at this namespace, as its
    /// ServiceAccount.
    pub fn kubernetes_toml(&self) -> String {
        format!(
            "namespace = \"{}\"\nkubeconfig = \"{}\"\n",
            self.name,
            self.cluster.service_kubeconfig.display()
        )
    }

    /// Writes a kubeconfig for the service's ServiceAccount that reaches the API server at
    /// `server` (a [`super::proxy::KubeProxy`]), this namespace its default; its path.
    pub fn kubeconfig_via(&self, server: &str, dir: &std::path::Path) -> std::path::PathBuf {
        let text = self
            .cluster
            .kubeconfig(
                &format!(
                    "system:serviceaccount:{}:{}",
                    super::SERVICE_NS,
                    super::SERVICE_ACCOUNT
                ),
                &self.cluster.service_token,
                &self.name,
            )
            .replace(
                &format!("server: {}", self.cluster.url),
                &format!("server: {server}"),
            );
        let path = dir.join("service.kubeconfig");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A client acting as the service's ServiceAccount, this namespace its default.
    pub async fn as_service(&self) -> kube::Client {
        let mut config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.cluster.service_kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
        config.default_namespace = self.name.clone();
        kube::Client::try_from(config).unwrap()
    }

    /// Creates (or updates) `obj` in this namespace as the admin; a `status` in it is then
    /// written through the status subresource (for objects no controller in the test cluster
    /// owns: a StatefulSet's ready replicas, a claim's phase). Returns the object as stored.
    pub async fn put(&self, mut obj: Value) -> Value {
        if obj["kind"] != "StorageClass" && obj["kind"] != "Namespace" {
            obj["metadata"]["namespace"] = json!(self.name);
        }
        let status = obj.as_object_mut().and_then(|o| o.remove("status"));
        let path = object_path(&obj);
        let req = http::Request::patch(format!(
            "{path}?fieldManager=backup-remediator-tests&force=true"
        ))
        .header("content-type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&obj).unwrap())
        .unwrap();
        let mut stored: Value = self.admin.request(req).await.unwrap_or_else(|e| {
            panic!("creating {} {}: {e}", obj["kind"], obj["metadata"]["name"])
        });
        if let Some(status) = status {
            stored = self.set_status(&path, status).await;
        }
        stored
    }

    /// GET `path` as the admin.
    pub async fn get(&self, path: &str) -> Value {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        self.admin
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    /// Merge-patches the status subresource of the object at `path`.
    pub async fn set_status(&self, path: &str, status: Value) -> Value {
        let req = http::Request::patch(format!("{path}/status"))
            .header("content-type", "application/merge-patch+json")
            .body(serde_json::to_vec(&json!({ "status": status })).unwrap())
            .unwrap();
        self.admin
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("writing the status of {path}: {e}"))
    }

    /// The backup Jobs in this namespace (label app=postgres-backup), oldest first.
    pub async fn jobs(&self) -> Vec<Job> {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), &self.name);
        let mut jobs = api
            .list(&ListParams::default().labels("app=postgres-backup"))
            .await
            .unwrap()
            .items;
        jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone());
        jobs
    }

    /// Waits (bounded, 60 s) until Job `name` has condition `Complete` or `Failed` (`kind`);
    /// the Job then.
    pub async fn wait_job(&self, name: &str, kind: &str) -> Job {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), &self.name);
        let mut last = None;
        for _ in 0..600 {
            if let Ok(job) = api.get(name).await {
                let done = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"));
                if done {
                    return job;
                }
                last = Some(job);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "Job {name} in {} has no {kind} condition within 60 s: {:#?}",
            self.name,
            last.and_then(|j| j.status)
        );
    }

    /// A script that runs until the test releases its Job ([`TestNamespace::release`]) and
    /// exits as told then (at most 5 minutes; then it fails).
    pub fn held(&self) -> String {
        let dir = self.release_dir();
        format!(
            "i=0; while [ ! -e \"{dir}/$JOB_NAME\" ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done; \
             echo \"released $JOB_NAME\"; exit \"$(cat \"{dir}/$JOB_NAME\" 2>/dev/null || echo 1)\""
        )
    }

    fn release_dir(&self) -> String {
        let dir = self.cluster.dir.join("release").join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        dir.display().to_string()
    }

    /// Lets the pod of Job `job` (running [`TestNamespace::held`]) exit: 0 when `succeeded`.
    pub fn release(&self, job: &str, succeeded: bool) {
        let code = if succeeded { "0" } else { "1" };
        std::fs::write(format!("{}/{job}", self.release_dir()), code).unwrap();
    }

    /// Waits (bounded, 60 s) until Job `name` has a running pod (status.active).
    pub async fn wait_active(&self, name: &str) {
        let api: Api<Job> = Api::namespaced(self.admin.clone(), &self.name);
        for _ in 0..600 {
            let job = api.get(name).await.unwrap();
            if job.status.and_then(|s| s.active).unwrap_or(0) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Job {name} in {} has no active pod within 60 s", self.name);
    }

    /// The pods of Job `job` that exist.
    pub async fn pods_of(&self, job: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.admin.clone(), &self.name);
        api.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    }
}

/// The API path of a (namespaced or cluster) object.
pub fn object_path(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let name = obj["metadata"]["name"].as_str().unwrap();
    let plural = match kind {
        "Endpoints" => "endpoints".to_owned(),
        "StorageClass" => "storageclasses".to_owned(),
        "NetworkPolicy" => "networkpolicies".to_owned(),
        k => format!("{}s", k.to_lowercase()),
    };
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) if kind != "StorageClass" && kind != "Namespace" => {
            format!("{prefix}/namespaces/{ns}/{plural}/{name}")
        }
        _ => format!("{prefix}/{plural}/{name}"),
    }
}
