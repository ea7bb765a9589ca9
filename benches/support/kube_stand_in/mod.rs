//! A stand-in Kubernetes API server, kept only for the targets bench (benches/targets.rs): it
//! serves the real API paths and object JSON (GET, LIST with label selectors, POST, merge PATCH,
//! DELETE, pod logs) in this process, so the bench's 200 targets measure the service's own costs
//! without an API server and etcd in the figures. Every test talks to the real API server of
//! the test cluster (tests/it/support/cluster/).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
}

/// A change to an object, as a watch reports it: (collection, ADDED|MODIFIED|DELETED, object).
type Change = (String, &'static str, Value);

/// A delay on requests: of `method` (any when `None`) under `prefix`, before the request is
/// handled, or after it was applied and before it is answered (`after`).
struct Delay {
    method: Option<String>,
    prefix: String,
    by: Duration,
    after: bool,
}

#[derive(Default)]
struct World {
    /// Watchers of every change (absent until the server starts).
    changes: Option<tokio::sync::broadcast::Sender<Change>>,
    /// collection path (e.g. /api/v1/namespaces/ns/pods) → name → object
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    logs: HashMap<(String, String), String>,
    requests: Vec<Recorded>,
    delays: Vec<Delay>,
    next_rv: u64,
    /// How long the garbage collector takes to remove a deleted Job's pods (`None`: the Job
    /// and nothing else goes at once). See [`KubeServer::pods_linger_on_delete`].
    pod_gc: Option<Duration>,
}

impl World {
    /// Removes the pods of Job `job` (label `job-name`) in the Job's namespace.
    fn remove_pods_of(&mut self, job: &Value) {
        let Some(name) = job["metadata"]["name"].as_str() else {
            return;
        };
        let ns = job["metadata"]["namespace"].as_str().unwrap_or_default();
        let coll = format!("/api/v1/namespaces/{ns}/pods");
        let gone: Vec<Value> = self
            .objects
            .get_mut(&coll)
            .map(|pods| {
                let names: Vec<String> = pods
                    .iter()
                    .filter(|(_, p)| p["metadata"]["labels"]["job-name"] == name)
                    .map(|(n, _)| n.clone())
                    .collect();
                names.iter().filter_map(|n| pods.remove(n)).collect()
            })
            .unwrap_or_default();
        for pod in gone {
            self.publish(&coll, "DELETED", &pod);
        }
    }
}

/// The running server; stops when dropped.
pub struct KubeServer {
    pub url: String,
    world: Arc<Mutex<World>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The plural resource name of a kind.
fn plural(kind: &str) -> String {
    match kind {
        "Endpoints" => "endpoints".into(),
        "StorageClass" => "storageclasses".into(),
        k => format!("{}s", k.to_lowercase()),
    }
}

/// The collection path of an object, from its apiVersion, kind and namespace.
fn collection(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let kind = obj["kind"].as_str().expect("kind");
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{base}/namespaces/{ns}/{}", plural(kind)),
        None => format!("{base}/{}", plural(kind)),
    }
}

/// Splits a request path into (collection, name, subresource).
fn parse(path: &str) -> Option<(String, Option<String>, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let plural_at = match *segs.first()? {
        "api" if segs.get(2) == Some(&"namespaces") => 4,
        "api" => 2,
        "apis" if segs.get(3) == Some(&"namespaces") => 5,
        "apis" => 3,
        _ => return None,
    };
    if segs.len() <= plural_at {
        return None;
    }
    let coll = format!("/{}", segs[..=plural_at].join("/"));
    Some((
        coll,
        segs.get(plural_at + 1).map(|s| s.to_string()),
        segs.get(plural_at + 2).map(|s| s.to_string()),
    ))
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn matches(obj: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => obj["metadata"]["labels"][k.trim_end_matches('=')].as_str() == Some(v),
            None => true,
        })
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl World {
    fn publish(&self, coll: &str, kind: &'static str, obj: &Value) {
        if let Some(tx) = &self.changes {
            let _ = tx.send((coll.to_owned(), kind, obj.clone()));
        }
    }
}

/// Whether `obj` passes a fieldSelector of `metadata.name=` / `metadata.namespace=` terms.
fn field_matches(obj: &Value, selector: &str) -> bool {
    selector
        .split(',')
        .filter(|s| !s.is_empty())
        .all(|term| match term.split_once('=') {
            Some(("metadata.name", v)) => obj["metadata"]["name"].as_str() == Some(v),
            Some(("metadata.namespace", v)) => obj["metadata"]["namespace"].as_str() == Some(v),
            _ => true,
        })
}

/// A watch on a collection, as the API server streams it: one JSON event per line, first
/// ADDED for every matching object, then each change, until `timeoutSeconds` passes.
fn watch(world: &Arc<Mutex<World>>, coll: String, query: &str) -> Response {
    let labels = query_param(query, "labelSelector").unwrap_or_default();
    let fields = query_param(query, "fieldSelector").unwrap_or_default();
    let timeout = query_param(query, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(290);
    let (initial, mut changes) = {
        let w = world.lock().unwrap();
        let initial: Vec<Value> = w
            .objects
            .get(&coll)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        (
            initial,
            w.changes.as_ref().expect("server started").subscribe(),
        )
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(16);
    let line = |kind: &str, obj: &Value| {
        let mut l = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap();
        l.push(b'\n');
        Ok(Bytes::from(l))
    };
    let wanted = move |o: &Value| matches(o, &labels) && field_matches(o, &fields);
    tokio::spawn(async move {
        for obj in initial.iter().filter(|o| wanted(o)) {
            if tx.send(line("ADDED", obj)).await.is_err() {
                return;
            }
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            let change = tokio::select! {
                c = changes.recv() => c,
                _ = tokio::time::sleep_until(end) => return,
                _ = tx.closed() => return,
            };
            match change {
                Ok((c, kind, obj)) if c == coll && wanted(&obj) => {
                    if tx.send(line(kind, &obj)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

async fn handle(
    State(world): State<Arc<Mutex<World>>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let (delay, after) = {
        let mut w = world.lock().unwrap();
        w.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type,
            body: body_json.clone(),
        });
        let find = |after: bool| {
            w.delays
                .iter()
                .find(|d| {
                    d.after == after
                        && path.starts_with(d.prefix.as_str())
                        && d.method.as_deref().is_none_or(|m| m == method.as_str())
                })
                .map(|d| d.by)
        };
        (find(false), find(true))
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let Some((coll, name, sub)) = parse(&path) else {
        return status(404, "NotFound", format!("no such path {path}"));
    };
    if method == Method::GET
        && name.is_none()
        && matches!(query_param(&query, "watch").as_deref(), Some("true" | "1"))
    {
        return watch(&world, coll, &query);
    }
    let response = {
        let mut w = world.lock().unwrap();
        match (method.as_str(), name, sub.as_deref()) {
            ("GET", Some(pod), Some("log")) => {
                let ns = coll.split('/').nth(4).unwrap_or_default().to_owned();
                match w.logs.get(&(ns, pod.clone())) {
                    Some(text) => {
                        let tail =
                            query_param(&query, "tailLines").and_then(|n| n.parse::<usize>().ok());
                        let lines: Vec<&str> = text.lines().collect();
                        let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
                        let mut out = lines[start..].join("\n");
                        out.push('\n');
                        (StatusCode::OK, out).into_response()
                    }
                    None => status(404, "NotFound", format!("pods \"{pod}\" not found")),
                }
            }
            ("GET", Some(name), None) => match w.objects.get(&coll).and_then(|m| m.get(&name)) {
                Some(obj) => axum::Json(obj.clone()).into_response(),
                None => status(
                    404,
                    "NotFound",
                    format!(
                        "{} \"{name}\" not found",
                        coll.rsplit('/').next().unwrap_or("")
                    ),
                ),
            },
            ("GET", None, None) => {
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = w
                    .objects
                    .get(&coll)
                    .map(|m| {
                        m.values()
                            .filter(|o| matches(o, &selector))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                let api_version = coll.split('/').collect::<Vec<_>>();
                let api_version = if api_version[1] == "api" {
                    "v1".to_owned()
                } else {
                    format!("{}/{}", api_version[2], api_version[3])
                };
                axum::Json(json!({"apiVersion": api_version, "kind": "List", "metadata": {"resourceVersion": w.next_rv.to_string()}, "items": items}))
                .into_response()
            }
            ("POST", None, None) => {
                let Some(mut obj) = body_json else {
                    return status(400, "BadRequest", "body is not JSON".into());
                };
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if w.objects.get(&coll).is_some_and(|m| m.contains_key(&name)) {
                    return status(409, "AlreadyExists", format!("\"{name}\" already exists"));
                }
                w.next_rv += 1;
                obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                obj["metadata"]["resourceVersion"] = json!(w.next_rv.to_string());
                obj["metadata"]["creationTimestamp"] =
                    json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                w.publish(&coll, "ADDED", &obj);
                w.objects.entry(coll).or_default().insert(name, obj.clone());
                (StatusCode::CREATED, axum::Json(obj)).into_response()
            }
            ("PATCH", Some(name), None) => {
                let Some(patch) = body_json else {
                    return status(400, "BadRequest", "body is not JSON".into());
                };
                w.next_rv += 1;
                let rv = w.next_rv;
                match w.objects.get_mut(&coll).and_then(|m| m.get_mut(&name)) {
                    Some(obj) => {
                        merge(obj, &patch);
                        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                        let obj = obj.clone();
                        w.publish(&coll, "MODIFIED", &obj);
                        axum::Json(obj).into_response()
                    }
                    None => status(404, "NotFound", format!("\"{name}\" not found")),
                }
            }
            ("DELETE", Some(name), None) if w.pod_gc.is_some() && coll.ends_with("/jobs") => {
                // As the API server and its garbage collector: `Foreground` keeps the Job
                // (deletionTimestamp, finalizer) until its pods are gone; `Background` removes
                // the Job at once and its pods later.
                let gc = w.pod_gc.unwrap_or_default();
                let foreground = body_json
                    .as_ref()
                    .is_some_and(|b| b["propagationPolicy"] == "Foreground");
                match w.objects.get_mut(&coll).and_then(|m| m.get_mut(&name)) {
                    None => status(404, "NotFound", format!("\"{name}\" not found")),
                    Some(obj) if foreground => {
                        obj["metadata"]["deletionTimestamp"] =
                            json!(chrono::Utc::now()
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        obj["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
                        let obj = obj.clone();
                        w.publish(&coll, "MODIFIED", &obj);
                        let (world, job) = (world.clone(), obj.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(gc).await;
                            let mut w = world.lock().unwrap();
                            w.remove_pods_of(&job);
                            if let Some(job) =
                                w.objects.get_mut(&coll).and_then(|m| m.remove(&name))
                            {
                                w.publish(&coll, "DELETED", &job);
                            }
                        });
                        axum::Json(obj).into_response()
                    }
                    Some(_) => {
                        let obj = w
                            .objects
                            .get_mut(&coll)
                            .and_then(|m| m.remove(&name))
                            .unwrap_or_default();
                        w.publish(&coll, "DELETED", &obj);
                        let (world, job) = (world.clone(), obj.clone());
                        tokio::spawn(async move {
                            tokio::time::sleep(gc).await;
                            world.lock().unwrap().remove_pods_of(&job);
                        });
                        axum::Json(obj).into_response()
                    }
                }
            }
            ("DELETE", Some(name), None) => {
                match w.objects.get_mut(&coll).and_then(|m| m.remove(&name)) {
                    Some(obj) => {
                        w.publish(&coll, "DELETED", &obj);
                        axum::Json(obj).into_response()
                    }
                    None => status(404, "NotFound", format!("\"{name}\" not found")),
                }
            }
            _ => status(405, "MethodNotAllowed", format!("{method} {path}")),
        }
    };
    if let Some(d) = after {
        tokio::time::sleep(d).await;
    }
    response
}

impl KubeServer {
    pub async fn start() -> Self {
        let world = Arc::new(Mutex::new(World {
            next_rv: 1,
            changes: Some(tokio::sync::broadcast::channel(256).0),
            ..World::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(world.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        KubeServer { url, world, task }
    }

    /// Stores (or replaces) an object; its path comes from apiVersion, kind and metadata.
    pub fn put(&self, mut obj: Value) {
        let mut w = self.world.lock().unwrap();
        w.next_rv += 1;
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] =
                json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        obj["metadata"]["resourceVersion"] = json!(w.next_rv.to_string());
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let coll = collection(&obj);
        let existed = w.objects.get(&coll).is_some_and(|m| m.contains_key(&name));
        w.publish(&coll, if existed { "MODIFIED" } else { "ADDED" }, &obj);
        w.objects.entry(coll).or_default().insert(name, obj);
    }

    /// The stored object of `kind` named `name` (any namespace), as the server would return it.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let p = plural(kind);
        let w = self.world.lock().unwrap();
        w.objects
            .iter()
            .filter(|(coll, _)| coll.ends_with(&format!("/{p}")))
            .find_map(|(_, m)| m.get(name).cloned())
    }

    /// Sets a Job's status to succeeded or failed, as the Job controller would; watchers see it.
    pub fn finish_job(&self, name: &str, succeeded: bool) {
        let mut job = self.get("Job", name).expect("job exists");
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        job["status"] = if succeeded {
            json!({"succeeded": 1, "startTime": now, "completionTime": now,
                   "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]})
        } else {
            json!({"failed": 1, "startTime": now, "conditions": [{"type": "Failed", "status": "True",
                   "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
                   "lastTransitionTime": now}]})
        };
        self.put(job);
    }

    /// The names of the Jobs created through the API (POST), in order.
    pub fn created_jobs(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
            .filter_map(|r| r.body?["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Requests that would change something (POST, PUT, PATCH, DELETE).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Removes an object of `kind` named `name` (any namespace).
    pub fn remove(&self, kind: &str, name: &str) {
        let p = plural(kind);
        let mut w = self.world.lock().unwrap();
        for (coll, m) in w.objects.iter_mut() {
            if coll.ends_with(&format!("/{p}")) {
                m.remove(name);
            }
        }
    }

    pub fn set_log(&self, namespace: &str, pod: &str, text: &str) {
        self.world
            .lock()
            .unwrap()
            .logs
            .insert((namespace.into(), pod.into()), text.into());
    }

    /// Requests under `path_prefix` wait `d` before being handled.
    pub fn delay(&self, path_prefix: &str, d: Duration) {
        self.push_delay(None, path_prefix, d, false);
    }

    /// `method` requests under `path_prefix` wait `d` before being handled.
    pub fn delay_request(&self, method: &str, path_prefix: &str, d: Duration) {
        self.push_delay(Some(method), path_prefix, d, false);
    }

    /// `method` requests under `path_prefix` are applied at once but answered `d` later (a
    /// client killed meanwhile has changed the world without hearing so).
    pub fn delay_answer(&self, method: &str, path_prefix: &str, d: Duration) {
        self.push_delay(Some(method), path_prefix, d, true);
    }

    fn push_delay(&self, method: Option<&str>, prefix: &str, by: Duration, after: bool) {
        self.world.lock().unwrap().delays.push(Delay {
            method: method.map(str::to_owned),
            prefix: prefix.to_owned(),
            by,
            after,
        });
    }

    /// From now on a deleted Job's pods stay `d` before the garbage collector removes them, and
    /// a Job deleted with `propagationPolicy: Foreground` stays (with its deletionTimestamp)
    /// until they are gone, as on a real cluster.
    pub fn pods_linger_on_delete(&self, d: Duration) {
        self.world.lock().unwrap().pod_gc = Some(d);
    }

    /// The pods of Job `job` the server holds.
    pub fn pods_of(&self, job: &str) -> Vec<String> {
        let w = self.world.lock().unwrap();
        w.objects
            .iter()
            .filter(|(coll, _)| coll.ends_with("/pods"))
            .flat_map(|(_, pods)| pods.iter())
            .filter(|(_, p)| p["metadata"]["labels"]["job-name"] == job)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Removes every delay.
    pub fn clear_delays(&self) {
        self.world.lock().unwrap().delays.clear();
    }

    /// The backup Jobs (label `app=postgres-backup`) that have not finished.
    pub fn active_jobs(&self) -> Vec<String> {
        let w = self.world.lock().unwrap();
        w.objects
            .iter()
            .filter(|(coll, _)| coll.ends_with("/jobs"))
            .flat_map(|(_, m)| m.values())
            .filter(|j| j["metadata"]["labels"]["app"] == "postgres-backup")
            .filter(|j| {
                let s = &j["status"];
                s["succeeded"].as_i64().unwrap_or(0) == 0
                    && s["conditions"].as_array().is_none_or(|c| {
                        !c.iter().any(|c| {
                            c["status"] == "True"
                                && ["Complete", "Failed"]
                                    .contains(&c["type"].as_str().unwrap_or(""))
                        })
                    })
            })
            .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The names of the Jobs deleted through the API, in order.
    pub fn deleted_jobs(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "DELETE" && r.path.contains("/jobs/"))
            .filter_map(|r| r.path.rsplit('/').next().map(str::to_owned))
            .collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.world.lock().unwrap().requests.clone()
    }

    pub fn client(&self) -> kube::Client {
        backup_remediator::install_crypto_provider();
        let mut config = kube::Config::new(self.url.parse().unwrap());
        config.default_namespace = "link-services".into();
        kube::Client::try_from(config).unwrap()
    }
}

/// Object builders, in the shape the API server returns them.
pub mod fixtures;
