//! A loopback HTTP proxy in front of moto whose S3 listings break part-way: every
//! ListObjectsV2 request that continues a listing (it carries a `continuation-token`) after
//! `pages` pages were served answers 500 InternalError, as a failing S3 would. Everything else
//! passes through unchanged, so a listing reads its first `pages` pages and then fails.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::response::Response;

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    pages: u32,
    /// ListObjectsV2 pages served (first pages included).
    served: AtomicU32,
}

/// Starts the proxy to `upstream` (moto's URL); its URL.
pub async fn failing_listings(upstream: String, pages: u32) -> String {
    let state = Arc::new(Proxy {
        upstream,
        http: reqwest::Client::new(),
        pages,
        served: AtomicU32::new(0),
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or_default().to_owned();
    let listing = query.contains("list-type=2");
    if listing
        && query.contains("continuation-token=")
        && p.served.load(Ordering::SeqCst) >= p.pages
    {
        return Response::builder()
            .status(500)
            .header("content-type", "application/xml")
            .body(Body::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code>\
                 <Message>We encountered an internal error. Please try again.</Message></Error>",
            ))
            .unwrap();
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method = req.method().clone();
    let mut headers = req.headers().clone();
    headers.remove("host");
    let body = to_bytes(req.into_body(), usize::MAX).await.unwrap();
    let answer = p
        .http
        .request(method, format!("{}{path_and_query}", p.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    if listing && answer.status().is_success() {
        p.served.fetch_add(1, Ordering::SeqCst);
    }
    let mut out = Response::builder().status(answer.status());
    for (k, v) in answer.headers() {
        if k != "transfer-encoding" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    out.body(Body::from(answer.bytes().await.unwrap())).unwrap()
}
