//! The HTTP/1 server loop: the application over hyper, with the limits `axum::serve` lacks.
//!
//! - A cap on concurrent connections: past it the loop stops accepting, so further clients wait
//!   in the kernel's backlog instead of each costing a task and buffers.
//! - A header-read timeout (hyper's: the request head must be complete this long after the
//!   server starts waiting for it, on a new connection or after the previous answer).
//! - An idle timeout: a connection on which no byte moves either way for this long is closed.
//! - The request-body deadline is the application's (see `limits.rs`), so it can answer 408.
//!
//! Each request carries its connection's peer address (axum's `ConnectInfo`): the pages believe
//! a trusted proxy's user header only from the configured networks.
//!
//! Every connection closed for a limit is counted in
//! `backup_remediator_http_connections_closed_total{reason}`. Shutdown is graceful: stop
//! accepting, let each connection finish the request it is serving, then return.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::time::{Instant, Sleep};

/// The connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The request head must arrive within this long.
    pub header_read_timeout: Duration,
    /// A connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// At most this many connections are served at once.
    pub max_connections: usize,
}

/// Why the server closed a connection on its own (the metric's `reason`).
pub use crate::metrics::ClosedReason as Closed;

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for the
/// connections to finish the requests they are serving (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // One shutdown signal per connection (see `Stops`).
    let stops = Arc::new(Mutex::new(Stops::default()));
    // Each connection holds a clone of `done_rx`; `done_tx.closed()` completes when all are gone.
    let (done_tx, done_rx) = watch::channel(());
    let open = crate::metrics::http_connections_open();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let (id, mut stop_rx) = stops_lock(&stops).register();
        let stops = stops.clone();
        let done_rx = done_rx.clone();
        let open = open.clone();
        tokio::spawn(async move {
            open.increment(1.0);
            let idle_fired = Arc::new(AtomicBool::new(false));
            let io = TokioIo::new(IdleIo::new(stream, limits.idle_timeout, idle_fired.clone()));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true);
            let app = tower::ServiceExt::map_request(
                app,
                move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                },
            );
            let conn = builder.serve_connection(io, TowerToHyperService::new(app));
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = &mut stop_rx => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            stops_lock(&stops).senders.remove(&id);
            if let Err(e) = result {
                if idle_fired.load(Ordering::Relaxed) {
                    crate::metrics::http_connection_closed(Closed::IdleTimeout);
                } else if e.is_timeout() {
                    crate::metrics::http_connection_closed(Closed::HeaderTimeout);
                } else {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            open.decrement(1.0);
            drop(permit);
            drop(done_rx);
        });
    }
    drop(listener);
    for (_, stop) in stops_lock(&stops).senders.drain() {
        let _ = stop.send(());
    }
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// The shutdown signals of the open connections, one each. A connection waits on its own
/// receiver, so serving it touches nothing the others share: waiting on one shared `watch`
/// channel costs every poll of every connection the channel's one mutex.
#[derive(Default)]
struct Stops {
    next: u64,
    senders: HashMap<u64, oneshot::Sender<()>>,
}

impl Stops {
    fn register(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.next += 1;
        self.senders.insert(self.next, tx);
        (self.next, rx)
    }
}

fn stops_lock(m: &Mutex<Stops>) -> std::sync::MutexGuard<'_, Stops> {
    // Plain map updates: a panic while holding the lock cannot leave it inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A socket that fails with `TimedOut` once no byte has moved either way for `idle`.
///
/// Moving bytes only records the time; the timer is re-armed when it fires early (bytes moved
/// since it was set), so a busy connection costs one timer update per `idle`, not one per read
/// and write.
struct IdleIo {
    inner: TcpStream,
    idle: Duration,
    last_moved: Instant,
    deadline: Pin<Box<Sleep>>,
    fired: Arc<AtomicBool>,
}

impl IdleIo {
    fn new(inner: TcpStream, idle: Duration, fired: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            idle,
            last_moved: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(idle)),
            fired,
        }
    }

    fn moved(&mut self) {
        self.last_moved = Instant::now();
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_moved + self.idle;
            if due <= Instant::now() {
                self.fired.store(true, Ordering::Relaxed);
                return true;
            }
            // Bytes moved since the timer was set: wait out the rest from the last move.
            self.deadline.as_mut().reset(due);
        }
    }
}

impl IdleIo {
    /// A write that moved bytes resets the clock; one that waits counts towards idleness.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")
}

impl AsyncRead for IdleIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
