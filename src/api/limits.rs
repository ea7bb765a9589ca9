//! Request-level limits and the error shape every route shares.
//!
//! - [`with_body_deadline`]: a request body must arrive within `server.body_timeout_ms` of its head;
//!   a client that declares a body and sends it slowly, or not at all, gets 408 and the
//!   connection is closed (counted as `body_timeout`).
//! - [`as_json_error`]: every error answer is `{"error": "…"}`, including those axum makes itself
//!   (405 with an empty body, 413/415/400 from extractors as text/plain).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use super::error::ErrorBody;
use super::server::Closed;

/// The request body must be complete within this long of the request head.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// Most bytes of a refused (413) body read and discarded before the answer.
const DRAIN_AT_MOST: usize = 64 << 20;

/// Wraps the request body in a deadline; when it passes, answers 408 and closes the connection,
/// whatever the handler made of the failed read.
///
/// A body refused as too large is read to its end (at most [`DRAIN_AT_MOST`] bytes, within the
/// same deadline) and discarded before the 413 goes out: closing on a sender still writing
/// resets the connection, and the sender (Alertmanager) then logs a broken pipe instead of the
/// 413 and its reason.
pub async fn with_body_deadline(limit: BodyTimeout, req: Request, next: Next) -> Response {
    let fired = Arc::new(AtomicBool::new(false));
    let (back, returned) = tokio::sync::oneshot::channel();
    let req = req.map(|body| {
        Body::new(Returned {
            inner: Some(Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(limit.0)),
                fired: fired.clone(),
            })),
            back: Some(back),
        })
    });
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let mut returned = returned;
        if let Ok(rest) = returned.try_recv() {
            drain(rest, DRAIN_AT_MOST).await;
        }
    }
    if !fired.load(Ordering::Relaxed) {
        return resp;
    }
    crate::metrics::http_connection_closed(Closed::BodyTimeout);
    let mut resp = (
        StatusCode::REQUEST_TIMEOUT,
        Json(ErrorBody::new(format!(
            "the request body did not arrive within {} ms",
            limit.0.as_millis()
        ))),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Reads `body` to its end, or to `at_most` bytes or its first error, discarding what it reads.
async fn drain(mut body: Body, at_most: usize) {
    let mut read = 0usize;
    while read <= at_most {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => return,
        }
    }
}

/// The request body, handed back to [`with_body_deadline`] when the handler drops it (so that
/// a refused body can be drained there).
struct Returned {
    inner: Option<Body>,
    back: Option<tokio::sync::oneshot::Sender<Body>>,
}

impl HttpBody for Returned {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.inner.take(), self.back.take()) {
            let _ = back.send(body);
        }
    }
}

/// A body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    fired: Arc<AtomicBool>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(axum::BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The longest error text read back from a non-JSON error answer (axum's are one line).
const MAX_ERROR_TEXT: usize = 4096;

/// Turns every error answer that is neither JSON nor an HTML page into `{"error": "…"}`, keeping its status and
/// headers (`Allow` on 405, `WWW-Authenticate` on 401).
pub async fn as_json_error(mut resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // The body was not read to its end: the connection cannot carry another request, and a
    // client that is not told would send its next one into a closed socket.
    if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // JSON already, or one of the pages' HTML error pages (`/ui/`), which a person reads.
    let is_json_or_page = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if is_json_or_page {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut error = if text.is_empty() { reason } else { text };
    if status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
        {
            error = format!("{error}; allowed: {allow}");
        }
    }
    let body = serde_json::to_vec(&ErrorBody::new(error)).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
