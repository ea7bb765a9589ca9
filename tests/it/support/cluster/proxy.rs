//! The network between the service and the test cluster's API server: an HTTPS proxy that
//! forwards every request to the real API server as it came (the service's own token, its
//! body) and its answer back as it came (watches streamed), recording each request — and, when a
//! test asks, holding a request before it reaches the server or its answer after the server
//! applied it: the slow or cut network a kill-and-resume test needs, which a real API server
//! cannot be asked to be. It stops when dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Cluster;

/// One request the service sent, and the API server's status code (0: no answer yet).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
    pub status: u16,
}

/// Requests of `method` (any when `None`) under `prefix` wait `by`: before they are forwarded,
/// or (`after`) once the server answered and before the answer goes back.
struct Delay {
    method: Option<String>,
    prefix: String,
    by: Duration,
    after: bool,
}

#[derive(Default)]
struct Shared {
    requests: Vec<Recorded>,
    delays: Vec<Delay>,
}

struct Upstream {
    url: String,
    http: reqwest::Client,
    shared: Mutex<Shared>,
}

pub struct KubeProxy {
    /// https://127.0.0.1:PORT, serving the cluster's certificate.
    pub url: String,
    upstream: Arc<Upstream>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KubeProxy {
    pub async fn start(cluster: &Cluster) -> KubeProxy {
        backup_remediator::install_crypto_provider();
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(cluster.ca_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let upstream = Arc::new(Upstream {
            url: cluster.url.clone(),
            http,
            shared: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(upstream.clone());
        let (port, task) = super::tls::serve(&cluster.dir, app).await.unwrap();
        KubeProxy {
            url: format!("https://127.0.0.1:{port}"),
            upstream,
            task,
        }
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.upstream.shared.lock().unwrap().requests.clone()
    }

    fn add(&self, method: Option<&str>, prefix: &str, by: Duration, after: bool) {
        self.upstream.shared.lock().unwrap().delays.push(Delay {
            method: method.map(str::to_owned),
            prefix: prefix.to_owned(),
            by,
            after,
        });
    }

    /// Every request under `prefix` waits `by` before it is forwarded.
    pub fn delay(&self, prefix: &str, by: Duration) {
        self.add(None, prefix, by, false);
    }

    /// `method` requests under `prefix` wait `by` before they are forwarded.
    pub fn delay_request(&self, method: &str, prefix: &str, by: Duration) {
        self.add(Some(method), prefix, by, false);
    }

    /// `method` requests under `prefix` are applied by the server, and their answer waits `by`.
    pub fn delay_answer(&self, method: &str, prefix: &str, by: Duration) {
        self.add(Some(method), prefix, by, true);
    }

    pub fn clear_delays(&self) {
        self.upstream.shared.lock().unwrap().delays.clear();
    }
}

async fn forward(
    State(up): State<Arc<Upstream>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let (index, before, after) = {
        let mut shared = up.shared.lock().unwrap();
        let matching = |after: bool| {
            shared
                .delays
                .iter()
                .filter(|d| d.after == after && path.starts_with(&d.prefix))
                .filter(|d| d.method.as_deref().is_none_or(|m| m == method.as_str()))
                .map(|d| d.by)
                .max()
        };
        let (before, after) = (matching(false), matching(true));
        shared.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            content_type: headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: serde_json::from_slice(&body).ok(),
            status: 0,
        });
        (shared.requests.len() - 1, before, after)
    };
    if let Some(d) = before {
        tokio::time::sleep(d).await;
    }
    let target = match uri.path_and_query() {
        Some(pq) => format!("{}{pq}", up.url),
        None => format!("{}{path}", up.url),
    };
    let mut req = up.http.request(method, target).body(body);
    for name in ["authorization", "content-type", "accept", "user-agent"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    let answer = match req.send().await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    up.shared.lock().unwrap().requests[index].status = status.as_u16();
    if let Some(d) = after {
        tokio::time::sleep(d).await;
    }
    let content_type = answer.headers().get("content-type").cloned();
    let chunks = futures_util::stream::unfold(answer, |mut a| async move {
        match a.chunk().await {
            Ok(Some(c)) => Some((Ok::<_, std::io::Error>(c), a)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e)), a)),
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() =
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if let Some(ct) = content_type {
        response.headers_mut().insert("content-type", ct);
    }
    response
}
