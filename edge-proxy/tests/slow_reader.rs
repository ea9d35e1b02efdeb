//! Slow readers against the edge's accept loop: a client that asks for a large answer
//! and reads none of it is disconnected once the write timeout passes (its answer's
//! body is dropped), while other clients are served meanwhile; a response that has
//! nothing to send for longer than the timeout (a quiet log follow) is not cut. And the
//! whole edge (`run`, with `write_timeout`) cuts a client that pipelines requests for
//! the OpenAPI document and reads none of the answers.
use std::{convert::Infallible, time::Duration};

use axum::{Router, body::Body, routing::get};
use futures_util::stream;
use souq_edge_proxy::{
    Config, run,
    serve::{Front, Limits, serve},
};
use souq_proto::{metering::AccessTable, routes::RouteTable};
use souq_test_support::{FakeMetering, FakeRoutes, Feed};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket},
    sync::oneshot,
};
use tokio_util::sync::CancellationToken;

/// The write timeout under test.
const WRITE: Duration = Duration::from_secs(1);
/// Generous bound on the disconnect.
const WITHIN: Duration = Duration::from_secs(30);
/// The large answer: far more than the socket buffers on both sides hold.
const BIG: usize = 1 << 30;
const CHUNK: usize = 64 * 1024;

/// Sends `done` when dropped: the answer's body went away with its connection.
struct OnDrop(Option<oneshot::Sender<()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let _ = done.send(());
        }
    }
}

fn limits() -> Limits {
    Limits { header_read: Duration::from_secs(10), body_read: Duration::from_secs(30), write: WRITE, max_connections: 100 }
}

/// `GET /big`: BIG bytes, telling `dropped` when the body is dropped; `GET /quiet`: one
/// line, then nothing for three write timeouts, then another; `GET /healthz`.
fn router(dropped: oneshot::Sender<()>) -> Router {
    let guard = std::sync::Arc::new(std::sync::Mutex::new(Some(dropped)));
    Router::new()
        .route(
            "/big",
            get(move || {
                let guard = OnDrop(guard.lock().expect("lock").take());
                let chunks = stream::iter((0..BIG / CHUNK).map(move |_| {
                    let _held = &guard;
                    Ok::<_, Infallible>(vec![0u8; CHUNK])
                }));
                async move { Body::from_stream(chunks) }
            }),
        )
        .route(
            "/quiet",
            get(|| async {
                let lines = stream::unfold(0, |n| async move {
                    match n {
                        0 => Some((Ok::<_, Infallible>("first\n"), 1)),
                        1 => {
                            tokio::time::sleep(WRITE * 3).await;
                            Some((Ok("second\n"), 2))
                        }
                        _ => None,
                    }
                });
                Body::from_stream(lines)
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off_and_others_are_served() {
    let (dropped, body_gone) = oneshot::channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, router(dropped), limits(), Front::default(), shutdown.clone()));

    // A small receive window, and never a read.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut slow = socket.connect(addr).await.expect("connect");
    slow.write_all(b"GET /big HTTP/1.1\r\nHost: edge\r\n\r\n").await.expect("request");

    let http = reqwest::Client::new();
    let health = http.get(format!("http://{addr}/healthz")).send().await.expect("healthz while stalled");
    assert_eq!(health.status(), 200);

    tokio::time::timeout(WITHIN, body_gone).await.expect("the slow reader was cut off in time").expect("dropped");
    // The connection is gone: what the buffers held, then the end, far short of BIG.
    let mut got = 0usize;
    let mut buf = vec![0u8; CHUNK];
    let drained = tokio::time::timeout(WITHIN, async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    });
    drained.await.expect("the connection ends");
    assert!(got < BIG / 2, "read {got} bytes");

    let health = http.get(format!("http://{addr}/healthz")).send().await.expect("healthz afterwards");
    assert_eq!(health.status(), 200);

    // A quiet stream is not a slow reader: nothing waited to be written.
    let quiet = http.get(format!("http://{addr}/quiet")).send().await.expect("quiet stream");
    assert_eq!(quiet.text().await.expect("whole quiet stream"), "first\nsecond\n");

    shutdown.cancel();
    tokio::time::timeout(WITHIN, server).await.expect("stops").expect("join").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_never_opens_its_window_is_cut_off() {
    let (dropped, body_gone) = oneshot::channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, router(dropped), limits(), Front::default(), shutdown.clone()));

    // HTTP/2 with prior knowledge and a 1 KiB window the client never reopens: the
    // edge has no write pending, only a stream it may not send on.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .initial_stream_window_size(1024)
        .initial_connection_window_size(1024)
        .handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let req = axum::http::Request::get(format!("http://{addr}/big")).body(Body::empty()).expect("request");
    let resp = sender.send_request(req).await.expect("response head");
    assert_eq!(resp.status(), 200);

    let health = reqwest::Client::new().get(format!("http://{addr}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    tokio::time::timeout(WITHIN, body_gone).await.expect("the stalled stream was cut off in time").expect("dropped");
    tokio::time::timeout(WITHIN, conn).await.expect("the connection ends").expect("join").ok();
    drop(resp);

    shutdown.cancel();
    tokio::time::timeout(WITHIN, server).await.expect("stops").expect("join").expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_cuts_off_a_pipelining_client_that_reads_nothing() {
    const REQUESTS: usize = 1000;
    let routes = FakeRoutes::new(Feed::tables(vec![RouteTable { generation: 1, routes: vec![] }]));
    let metering = FakeMetering::new(Feed::tables(vec![AccessTable { generation: 1, ..AccessTable::default() }]));
    let cp = souq_test_support::serve(tonic::service::Routes::new(routes.service()).add_service(metering.service())).await;
    let mut cfg = Config::new(cp.url(), "join-token-0123456789".into());
    cfg.metering = false;
    cfg.write_timeout = WRITE;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let edge = tokio::spawn(run(cfg, listener, shutdown.clone()));

    let http = reqwest::Client::new();
    let doc = http.get(format!("http://{addr}/api/v1/openapi.json")).send().await.expect("document");
    let one = doc.bytes().await.expect("document body").len();

    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let (mut read, mut write) = socket.connect(addr).await.expect("connect").into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..REQUESTS {
            let req = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: edge\r\n\r\n";
            if write.write_all(req).await.is_err() {
                return;
            }
        }
    });
    let health = http.get(format!("http://{addr}/healthz")).send().await.expect("healthz while stalled");
    assert_eq!(health.status(), 200);
    // Read nothing for several write timeouts; then take what is left of the connection.
    tokio::time::sleep(WRITE * 5).await;
    let mut got = 0usize;
    let mut buf = vec![0u8; CHUNK];
    let drained = tokio::time::timeout(WITHIN, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
    });
    drained.await.expect("the connection ends");
    assert!(got < one * REQUESTS / 2, "read {got} of {} bytes: the slow reader was never cut off", one * REQUESTS);
    writer.abort();

    shutdown.cancel();
    tokio::time::timeout(WITHIN, edge).await.expect("the edge stops").expect("join").expect("run");
}
