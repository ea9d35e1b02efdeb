//! The edge's accept loop, hardened against slow and idle clients: a header-read
//! timeout, a request-body timeout, a cap on open connections, TCP_NODELAY, and a
//! graceful drain on shutdown. It replaces `axum::serve`, keeping its `ConnectInfo`.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::{debug, warn};

/// The limits [`serve`] applies to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a client may take to send a request's headers: the whole first request's
    /// headers from the moment the connection is accepted (for HTTP/2 too, its preface
    /// and first headers), and each later HTTP/1 request's headers. The connection is
    /// closed past it.
    pub header_read: Duration,
    /// Longest the request body may go without sending data; its reader then fails
    /// (and the request is answered as a bad body). Responses (log follows, calls to
    /// deployed APIs) are not limited by it.
    pub body_read: Duration,
    /// Most connections open at once. Past it the edge stops accepting: new
    /// connections wait in the kernel's listen backlog until one closes.
    pub max_connections: usize,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets each connection finish its in-flight requests (idle ones close at once) and
/// returns when every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let app = tower::ServiceBuilder::new().layer(RequestBodyTimeoutLayer::new(limits.body_read)).service(router);
    loop {
        // A slot first: at the cap, connections wait in the backlog, not in memory.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let (builder, app, shutdown) = (builder.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            connection(&builder, stream, peer, app, limits.header_read, shutdown).await;
            drop(slot);
        });
    }
    // Every slot back means every connection closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _drained = slots.acquire_many(all).await.map_err(std::io::Error::other)?;
    Ok(())
}

/// Errors of one connection (the client went away) are skipped; others (too many open
/// files) wait a second, as `axum::serve` does, so the loop does not spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection. Until its first request's headers arrive it lives at most
/// `header_read` (hyper's own timeout covers HTTP/1 headers, but not the wait for the
/// protocol to be told apart, nor HTTP/2); at shutdown it drains gracefully.
async fn connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    app: S,
    header_read: Duration,
    shutdown: CancellationToken,
) where
    S: Service<axum::http::Request<Incoming>, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "TCP_NODELAY");
    }
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let first_headers = tokio::time::sleep(header_read);
    let mut first_headers = std::pin::pin!(first_headers);
    let (mut watching, mut draining) = (true, false);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    debug!(error = %e, peer = %peer, "connection ended with an error");
                }
                return;
            }
            () = first_headers.as_mut(), if watching => {
                if !started.load(Ordering::Relaxed) {
                    debug!(peer = %peer, "no request headers in time; closing");
                    return;
                }
                watching = false;
            }
            () = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}
