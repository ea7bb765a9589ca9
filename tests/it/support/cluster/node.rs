//! The node agent: the one stand-in left in the test cluster, at the kubelet's place.
//!
//! What it does as a kubelet would: registers a Node (`node-agent`, InternalIP 127.0.0.1, its
//! kubelet port); binds the pods of Jobs to it (there is no scheduler: it also does the binding,
//! through the `binding` subresource); resolves each pod's environment as the kubelet does
//! (`value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef`, `envFrom`; a missing Secret or key
//! is the kubelet's `CreateContainerConfigError`, retried); runs the first container's
//! **command and args on this host** (the image is neither pulled nor used: the host's
//! programs stand in for the image's); reports the pod's phase, container state, exit code and
//! restarts (`restartPolicy: OnFailure` restarts the command after a back-off of 1, 2, 4… s,
//! capped at 8 s, where the kubelet waits 10 s, 20 s… up to 5 min) through the `status`
//! subresource; kills the command and removes the pod when it is deleted (graceful deletion
//! waits for the kubelet); and serves the container log at its kubelet endpoint
//! (`/containerLogs/{namespace}/{pod}/{container}`, HTTPS with a certificate of the cluster's
//! CA), so `pods/log` works through the API server.
//!
//! What only this stand-in does: a pod annotated `node-agent.test/report` gets the state named
//! there reported instead of (or, for `OOMKilled`, after) running its command — `OOMKilled`,
//! `Evicted` (message from `node-agent.test/message`) and `ImagePullBackOff`: states of a real
//! node this host cannot be made to produce on demand. A comma-separated list names the state
//! of a Job's first, second… pod in turn (`Evicted,OOMKilled`; an empty entry: just run it).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use super::Cluster;

/// The Node the agent registers.
pub const NODE: &str = "node-agent";
/// Annotation naming a state to report (see the module's documentation).
pub const REPORT: &str = "node-agent.test/report";
/// The message of a reported `Evicted`.
pub const MESSAGE: &str = "node-agent.test/message";
/// Most bytes of log kept per container (the oldest go first).
const LOG_CAP: usize = 1 << 20;

type Logs = Arc<Mutex<HashMap<(String, String, String), Vec<u8>>>>;

pub struct NodeAgent;

impl NodeAgent {
    /// Starts the kubelet endpoint, registers the Node and starts the pod loop on the current
    /// runtime (the test cluster's, which lives as long as the process).
    pub async fn start(cluster: &Cluster) -> Result<(), String> {
        let admin = cluster.admin().await;
        let logs: Logs = Arc::default();
        let port = serve_kubelet(cluster, logs.clone()).await?;
        register(&admin, port).await?;
        let home = cluster.dir.join("node-agent");
        std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
        tokio::spawn(pod_loop(admin, logs, home));
        Ok(())
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn register(admin: &kube::Client, port: u16) -> Result<(), String> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE,
        "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}});
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(node).unwrap(),
        )
        .await
        .map_err(|e| format!("registering the node: {e}"))?;
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "capacity": {"cpu": "2", "memory": "8Gi", "pods": "250", "ephemeral-storage": "20Gi"},
        "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "250", "ephemeral-storage": "20Gi"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "node agent is posting ready status",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                     "osImage": "the test host", "containerRuntimeVersion": "host://node-agent",
                     "kubeletVersion": "node-agent", "kubeProxyVersion": "", "operatingSystem": "linux",
                     "architecture": "amd64"}}});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(|e| format!("reporting the node's status: {e}"))?;
    Ok(())
}

/// Binds new Job pods, starts the ones bound here, finishes the deletion of deleted ones.
async fn pod_loop(admin: kube::Client, logs: Logs, home: PathBuf) {
    let pods: Api<Pod> = Api::all(admin.clone());
    let mut started: HashSet<String> = HashSet::new();
    // Pods started per (namespace, Job): the index of a Job's next pod.
    let mut per_job: HashMap<(String, String), usize> = HashMap::new();
    let kills: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>> = Arc::default();
    loop {
        if let Ok(list) = pods
            .list(&ListParams::default().fields("spec.nodeName="))
            .await
        {
            for p in list.items {
                let owned_by_job = p
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|r| r.kind == "Job"));
                if owned_by_job && p.metadata.deletion_timestamp.is_none() {
                    bind(&admin, &p).await;
                }
            }
        }
        let here = ListParams::default().fields(&format!(
            "spec.nodeName={NODE},status.phase!=Succeeded,status.phase!=Failed"
        ));
        if let Ok(list) = pods.list(&here).await {
            for p in list.items {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                if p.metadata.deletion_timestamp.is_some() {
                    if let Some(kill) = kills.lock().unwrap().remove(&uid) {
                        let _ = kill.send(());
                    }
                    let api: Api<Pod> = Api::namespaced(admin.clone(), &ns);
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(kube::api::Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    let _ = api.delete(&name, &dp).await;
                } else if started.insert(uid.clone()) {
                    let job = p
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("batch.kubernetes.io/job-name").cloned())
                        .unwrap_or_default();
                    let count = per_job.entry((ns.clone(), job)).or_insert(0);
                    let index = *count;
                    *count += 1;
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    kills.lock().unwrap().insert(uid.clone(), tx);
                    let run = PodRun {
                        api: Api::namespaced(admin.clone(), &ns),
                        admin: admin.clone(),
                        pod: p,
                        index,
                        logs: logs.clone(),
                        home: home.join(&uid),
                    };
                    let kills = kills.clone();
                    tokio::spawn(async move {
                        run.run(rx).await;
                        kills.lock().unwrap().remove(&uid);
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bind(admin: &kube::Client, p: &Pod) {
    let ns = p.metadata.namespace.as_deref().unwrap_or_default();
    let name = p.metadata.name.as_deref().unwrap_or_default();
    let body = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                      "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}});
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    if let Err(e) = admin.request::<Value>(req).await {
        tracing::debug!(pod = name, error = %e, "binding failed");
    }
}

/// One pod's life on the node.
struct PodRun {
    api: Api<Pod>,
    admin: kube::Client,
    pod: Pod,
    /// Which of its Job's pods this is (0: the first).
    index: usize,
    logs: Logs,
    home: PathBuf,
}

/// How one run of the command ended.
enum Exit {
    Code(i32),
    Killed,
}

impl PodRun {
    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    fn container(&self) -> Value {
        serde_json::to_value(&self.pod.spec.as_ref().unwrap().containers[0]).unwrap()
    }

    async fn status(&self, status: Value) -> bool {
        let patch = Patch::Merge(json!({ "status": status }));
        self.api
            .patch_status(&self.name(), &PatchParams::default(), &patch)
            .await
            .is_ok()
    }

    fn container_status(&self, state: Value, restarts: u32, last: Value) -> Value {
        let c = self.container();
        json!([{"name": c["name"], "image": c["image"], "imageID": "", "containerID": "host://node-agent",
                "ready": state.get("running").is_some(), "started": state.get("running").is_some(),
                "restartCount": restarts, "state": state, "lastState": last}])
    }

    async fn run(self, mut killed: tokio::sync::oneshot::Receiver<()>) {
        let annotations = self.pod.metadata.annotations.clone().unwrap_or_default();
        let report = annotations
            .get(REPORT)
            .and_then(|r| r.split(',').nth(self.index))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let base = json!({"hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
                          "startTime": now()});
        match report.as_str() {
            "Evicted" => {
                let message = annotations.get(MESSAGE).cloned().unwrap_or_default();
                let mut s = base.clone();
                s["phase"] = json!("Failed");
                s["reason"] = json!("Evicted");
                s["message"] = json!(message);
                self.status(s).await;
                return;
            }
            "ImagePullBackOff" => {
                let mut s = base.clone();
                s["phase"] = json!("Pending");
                let image = self.container()["image"].clone();
                s["containerStatuses"] = self.container_status(
                    json!({"waiting": {"reason": "ImagePullBackOff",
                                       "message": format!("Back-off pulling image {image}")}}),
                    0,
                    json!({}),
                );
                self.status(s).await;
                return;
            }
            _ => {}
        }
        // The environment, retried as the kubelet retries a missing Secret or key.
        let mut env = None;
        for _ in 0..150 {
            match self.environment().await {
                Ok(e) => {
                    env = Some(e);
                    break;
                }
                Err(message) => {
                    let mut s = base.clone();
                    s["phase"] = json!("Pending");
                    s["containerStatuses"] = self.container_status(
                        json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}}),
                        0,
                        json!({}),
                    );
                    if !self.status(s).await {
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = &mut killed => return,
            }
        }
        let Some(env) = env else { return };
        let restart_on_failure = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            != Some("Never");
        let mut restarts = 0;
        let mut last = json!({});
        loop {
            let started = now();
            let mut s = base.clone();
            s["phase"] = json!("Running");
            s["containerStatuses"] = self.container_status(
                json!({"running": {"startedAt": started}}),
                restarts,
                last.clone(),
            );
            if !self.status(s).await {
                return;
            }
            let code = match self.execute(&env, &mut killed).await {
                Exit::Code(c) => c,
                Exit::Killed => return,
            };
            let oom = report == "OOMKilled";
            let (code, reason) = match (oom, code) {
                (true, _) => (137, "OOMKilled"),
                (false, 0) => (0, "Completed"),
                (false, c) => (c, "Error"),
            };
            let terminated = json!({"terminated": {"exitCode": code, "reason": reason,
                "startedAt": started, "finishedAt": now(), "containerID": "host://node-agent"}});
            if code != 0 && restart_on_failure && restarts < 20 {
                restarts += 1;
                last = terminated;
                let mut s = base.clone();
                s["phase"] = json!("Running");
                s["containerStatuses"] = self.container_status(
                    json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off restarting failed container {}", self.container()["name"])}}),
                    restarts,
                    last.clone(),
                );
                if !self.status(s).await {
                    return;
                }
                let backoff = Duration::from_secs(1 << (restarts - 1).min(3));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = &mut killed => return,
                }
            }
            let mut s = base.clone();
            s["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
            s["containerStatuses"] = self.container_status(terminated, restarts, last);
            self.status(s).await;
            return;
        }
    }

    /// The container's environment as the kubelet builds it, or the kubelet's message.
    async fn environment(&self) -> Result<Vec<(String, String)>, String> {
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let c = self.container();
        let mut env = Vec::new();
        for from in c["envFrom"].as_array().cloned().unwrap_or_default() {
            let prefix = from["prefix"].as_str().unwrap_or_default();
            let optional = |r: &Value| r["optional"].as_bool().unwrap_or(false);
            if let Some(name) = from["secretRef"]["name"].as_str() {
                match self.secret(&ns, name).await {
                    Some(data) => {
                        env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
                    }
                    None if optional(&from["secretRef"]) => {}
                    None => return Err(format!("secret \"{name}\" not found")),
                }
            }
            if let Some(name) = from["configMapRef"]["name"].as_str() {
                match self.config_map(&ns, name).await {
                    Some(data) => {
                        env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
                    }
                    None if optional(&from["configMapRef"]) => {}
                    None => return Err(format!("configmap \"{name}\" not found")),
                }
            }
        }
        for e in c["env"].as_array().cloned().unwrap_or_default() {
            let name = e["name"].as_str().unwrap_or_default().to_owned();
            let from = &e["valueFrom"];
            let value = if let Some(v) = e["value"].as_str() {
                Some(v.to_owned())
            } else if let Some(r) = from.get("secretKeyRef") {
                let (src, key) = (
                    r["name"].as_str().unwrap_or_default(),
                    r["key"].as_str().unwrap_or_default(),
                );
                match self.secret(&ns, src).await {
                    None if r["optional"].as_bool().unwrap_or(false) => None,
                    None => return Err(format!("secret \"{src}\" not found")),
                    Some(data) => match data.get(key) {
                        Some(v) => Some(v.clone()),
                        None if r["optional"].as_bool().unwrap_or(false) => None,
                        None => {
                            return Err(format!("couldn't find key {key} in Secret {ns}/{src}"))
                        }
                    },
                }
            } else if let Some(r) = from.get("configMapKeyRef") {
                let (src, key) = (
                    r["name"].as_str().unwrap_or_default(),
                    r["key"].as_str().unwrap_or_default(),
                );
                match self
                    .config_map(&ns, src)
                    .await
                    .and_then(|d| d.get(key).cloned())
                {
                    Some(v) => Some(v),
                    None if r["optional"].as_bool().unwrap_or(false) => None,
                    None => return Err(format!("couldn't find key {key} in ConfigMap {ns}/{src}")),
                }
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                Some(self.field(path))
            } else {
                Some(String::new())
            };
            if let Some(v) = value {
                env.push((name, expand(&v, &env)));
            }
        }
        Ok(env)
    }

    fn field(&self, path: &str) -> String {
        let pod = serde_json::to_value(&self.pod).unwrap();
        let keyed = |prefix: &str, map: &str| {
            path.strip_prefix(prefix)
                .and_then(|k| k.strip_suffix("']"))
                .map(|k| {
                    pod["metadata"][map][k]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
        };
        if let Some(v) = keyed("metadata.labels['", "labels") {
            return v;
        }
        if let Some(v) = keyed("metadata.annotations['", "annotations") {
            return v;
        }
        match path {
            "status.hostIP" | "status.podIP" => "127.0.0.1".into(),
            "spec.nodeName" => NODE.into(),
            p => {
                let v = p.split('.').fold(&pod, |v, k| &v[k]);
                v.as_str().unwrap_or_default().to_owned()
            }
        }
    }

    async fn secret(&self, ns: &str, name: &str) -> Option<HashMap<String, String>> {
        let api: Api<Secret> = Api::namespaced(self.admin.clone(), ns);
        let s = api.get_opt(name).await.ok().flatten()?;
        let mut out: HashMap<String, String> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        out.extend(s.string_data.unwrap_or_default());
        Some(out)
    }

    async fn config_map(&self, ns: &str, name: &str) -> Option<HashMap<String, String>> {
        let api: Api<ConfigMap> = Api::namespaced(self.admin.clone(), ns);
        let cm = api.get_opt(name).await.ok().flatten()?;
        Some(cm.data.unwrap_or_default().into_iter().collect())
    }

    /// Runs the container's command and args on this host with `env`, its output appended to
    /// the container's log.
    async fn execute(
        &self,
        env: &[(String, String)],
        killed: &mut tokio::sync::oneshot::Receiver<()>,
    ) -> Exit {
        let c = self.container();
        let words: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .chain(c["args"].as_array())
            .flatten()
            .filter_map(|w| w.as_str().map(|w| expand(w, env)))
            .collect();
        let key = (
            self.pod.metadata.namespace.clone().unwrap_or_default(),
            self.name(),
            c["name"].as_str().unwrap_or_default().to_owned(),
        );
        let append = |line: &[u8]| {
            let mut logs = self.logs.lock().unwrap();
            let buf = logs.entry(key.clone()).or_default();
            buf.extend_from_slice(line);
            if buf.len() > LOG_CAP {
                let cut = buf.len() - LOG_CAP;
                buf.drain(..cut);
            }
        };
        if c["command"].as_array().is_none_or(|a| a.is_empty()) {
            append(b"node agent: the container names no command; the image's entrypoint is not run here\n");
            return Exit::Code(128);
        }
        let _ = std::fs::create_dir_all(&self.home);
        let mut cmd = tokio::process::Command::new(&words[0]);
        cmd.args(&words[1..])
            .env_clear()
            .env("PATH", host_path())
            .env("HOME", &self.home)
            .env("HOSTNAME", self.name())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                append(format!("node agent: starting {:?}: {e}\n", words[0]).as_bytes());
                return Exit::Code(127);
            }
        };
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        for stream in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stream);
                let mut line = Vec::new();
                while lines.read_until(b'\n', &mut line).await.unwrap_or(0) > 0 {
                    let _ = tx.send(std::mem::take(&mut line));
                }
            });
        }
        drop(tx);
        let status = loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some(l) => append(&l),
                    None => break child.wait().await,
                },
                status = child.wait() => {
                    while let Some(l) = rx.recv().await { append(&l); }
                    break status;
                }
                _ = &mut *killed => {
                    let _ = child.kill().await;
                    return Exit::Killed;
                }
            }
        };
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(s) => Exit::Code(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))),
            Err(_) => Exit::Code(128),
        }
    }
}

/// The PATH of the commands the node agent runs: `NODE_AGENT_PATH` (scripts/test.sh puts the
/// aws CLI there) before this process's own.
fn host_path() -> String {
    let own = std::env::var("PATH").unwrap_or_default();
    match std::env::var("NODE_AGENT_PATH") {
        Ok(extra) if !extra.is_empty() => format!("{extra}:{own}"),
        _ => own,
    }
}

/// `$(VAR)` references expanded from `env`, as the kubelet expands them (`$$` escapes).
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(end) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + end + 3]),
            }
            rest = &after[end + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The kubelet endpoint: container logs over HTTPS. Returns its port.
async fn serve_kubelet(cluster: &Cluster, logs: Logs) -> Result<u16, String> {
    let app = axum::Router::new()
        .route(
            "/containerLogs/{ns}/{pod}/{container}",
            axum::routing::get(container_log),
        )
        .with_state(logs);
    let (port, _task) = super::tls::serve(&cluster.dir, app).await?;
    Ok(port)
}

async fn container_log(
    axum::extract::State(logs): axum::extract::State<Logs>,
    axum::extract::Path((ns, pod, container)): axum::extract::Path<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(text) = logs
        .lock()
        .unwrap()
        .get(&(ns.clone(), pod.clone(), container.clone()))
        .cloned()
    else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            ),
        )
            .into_response();
    };
    let mut text = text;
    if let Some(n) = q.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        let starts: Vec<usize> = std::iter::once(0)
            .chain(
                body.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        let from = starts.len().saturating_sub(n);
        text = if n == 0 {
            Vec::new()
        } else {
            text[starts[from]..].to_vec()
        };
    }
    if let Some(n) = q.get("limitBytes").and_then(|n| n.parse::<usize>().ok()) {
        text.truncate(n);
    }
    ([("content-type", "text/plain")], text).into_response()
}
