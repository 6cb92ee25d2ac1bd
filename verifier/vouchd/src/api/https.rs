//! The management API's listener: TLS (the identity from [`crate::tls`]) and HTTP/1.1 or
//! HTTP/2 per connection, each connection a task on `state.tasks`.
//!
//! Limits before and between requests, so a client that connects and stalls holds nothing
//! for long: at most `api_max_connections` connections (more wait in the kernel's backlog),
//! the TLS handshake within [`HANDSHAKE_TIMEOUT`], a request's headers within
//! `api_header_timeout`, and a connection closed after `api_idle_timeout` without a byte
//! either way. The request's own deadline (body included) is the router's
//! (`api_request_timeout`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::service::AppState;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over TLS on `listener` until `state.shutdown` is cancelled; then stops
/// accepting and lets each connection finish the request in flight (HTTP graceful shutdown).
/// Connections run on `state.tasks`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    state: AppState,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(state.config.api_max_connections));
    let header_timeout = state.config.api_header_timeout();
    let idle_timeout = state.config.api_idle_timeout();
    loop {
        let (permit, tcp, peer) = tokio::select! {
            accepted = async {
                let permit = Arc::clone(&slots).acquire_owned().await;
                (permit, listener.accept().await)
            } => match accepted {
                (Ok(permit), Ok((tcp, peer))) => (permit, tcp, peer),
                (Err(_), _) => return,
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = state.shutdown.cancelled() => return,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let shutdown = state.shutdown.clone();
        state.tasks.spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let (stream, activity) = Watched::new(stream);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            builder.http2().timer(TokioTimer::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                r = connection.as_mut() => r,
                () = activity.idle_for(idle_timeout) => {
                    tracing::debug!(%peer, "API connection idle: closed");
                    return;
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        });
    }
}

/// When a connection last moved a byte, in milliseconds since it was accepted.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let due = last + limit;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A stream that records its activity.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    fn new(inner: S) -> (Self, Arc<Activity>) {
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        });
        (
            Self {
                inner,
                activity: Arc::clone(&activity),
            },
            activity,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
