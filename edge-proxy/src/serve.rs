//! The edge's accept loop, hardened against slow and idle clients: a header-read
//! timeout, a request-body timeout, a write timeout for slow readers, a cap on open
//! connections, TCP_NODELAY, and a graceful drain on shutdown; optional TLS; and each
//! request's client address (behind trusted proxies, from `X-Forwarded-For`). It
//! replaces `axum::serve`, keeping its `ConnectInfo`.
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
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use futures_util::TryFutureExt;
use tower::{Service, ServiceExt};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tracing::{debug, warn};

use crate::{
    client_addr::{ClientAddr, TrustedProxies},
    tls,
    write_timeout::{Stalls, WriteTimeout},
};

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
    /// Longest a write may wait on a client that reads nothing; the connection is then
    /// closed. A response with nothing to send (a quiet log follow) is not limited.
    pub write: Duration,
    /// Most connections open at once. Past it the edge stops accepting: new
    /// connections wait in the kernel's listen backlog until one closes.
    pub max_connections: usize,
}

/// How clients reach [`serve`]: through which proxies, and over TLS or not.
#[derive(Clone, Default)]
pub struct Front {
    /// The peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// HTTPS when set; plain HTTP otherwise.
    pub tls: Option<TlsAcceptor>,
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets each connection finish its in-flight requests (idle ones close at once) and
/// returns when every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    front: Front,
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
        let (builder, app, front, shutdown) = (builder.clone(), app.clone(), front.clone(), shutdown.clone());
        tokio::spawn(async move {
            accepted(&builder, stream, peer, app, limits, front, shutdown).await;
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

/// Takes one accepted connection: the write timeout around it, then over TLS (whose
/// handshake counts against the header-read time) or plain, to [`connection`].
async fn accepted<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    app: S,
    limits: Limits,
    front: Front,
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
    let deadline = Instant::now() + limits.header_read;
    let conn = Conn { peer, first_headers_by: deadline, write: limits.write, trusted: front.trusted_proxies.clone() };
    let Some(acceptor) = front.tls.clone() else {
        let stream = WriteTimeout::new(stream, limits.write);
        return connection(builder, stream, app, conn, shutdown).await;
    };
    let handshake = async {
        if tls::speaks_plain(&stream).await {
            tls::refuse_plain(WriteTimeout::new(stream, limits.write), limits.header_read).await;
            return None;
        }
        let accepted = acceptor.accept(WriteTimeout::new(stream, limits.write)).await;
        accepted.inspect_err(|e| debug!(error = %e, peer = %peer, "TLS handshake failed")).ok()
    };
    let stream = tokio::select! {
        done = tokio::time::timeout_at(deadline, handshake) => match done {
            Ok(Some(stream)) => stream,
            Ok(None) => return,
            Err(_) => {
                debug!(peer = %peer, "no TLS handshake in time; closing");
                return;
            }
        },
        () = shutdown.cancelled() => return,
    };
    connection(builder, stream, app, conn, shutdown).await;
}

/// What [`connection`] knows of its client.
struct Conn {
    peer: SocketAddr,
    /// When the first request's headers must have arrived.
    first_headers_by: Instant,
    /// The write timeout.
    write: Duration,
    trusted: Arc<TrustedProxies>,
}

/// Serves one connection. Until its first request's headers arrive it lives at most
/// until `first_headers_by` (hyper's own timeout covers HTTP/1 headers, but not the
/// wait for the protocol to be told apart, nor HTTP/2); a response body the client
/// holds up for the write timeout closes it; at shutdown it drains gracefully. Each
/// request carries the peer as `ConnectInfo` and the client as [`ClientAddr`].
async fn connection<S, I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    app: S,
    Conn { peer, first_headers_by, write, trusted }: Conn,
    shutdown: CancellationToken,
) where
    S: Service<axum::http::Request<Incoming>, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let seen = started.clone();
    let stalls = Arc::new(Stalls::default());
    let watch = stalls.clone();
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let client = trusted.client(peer.ip(), req.headers());
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(ClientAddr(client));
        let watch = watch.clone();
        app.clone().oneshot(req).map_ok(move |resp| resp.map(|body| axum::body::Body::new(watch.watch(body))))
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let first_headers = tokio::time::sleep_until(first_headers_by);
    let mut first_headers = std::pin::pin!(first_headers);
    let (mut watching, mut draining) = (true, false);
    let mut stall_check = tokio::time::interval((write / 4).max(Duration::from_millis(10)));
    stall_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = stall_check.tick() => {
                if stalls.any_longer_than(write) {
                    debug!(peer = %peer, "a response waited on the client past the write timeout; closing");
                    return;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}
