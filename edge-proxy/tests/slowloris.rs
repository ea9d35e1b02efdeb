//! Slowloris against `run`: 500 connections that send half a request header, and a few
//! that send nothing, are each closed by the edge once its header-read timeout passes,
//! while a normal client is served meanwhile; and the edge still shuts down cleanly.
use std::time::Duration;

use futures_util::future::join_all;
use souq_edge_proxy::{Config, run};
use souq_proto::{metering::AccessTable, routes::RouteTable};
use souq_test_support::{FakeMetering, FakeRoutes, Feed, Served, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

const JOIN: &str = "join-token-0123456789";
const SLOW: usize = 500;
const SILENT: usize = 20;
/// Generous bound on each close: the timeout is 1 s.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);

/// A control plane with empty route and access tables.
async fn control_plane() -> Served {
    let routes = FakeRoutes::new(Feed::tables(vec![RouteTable { generation: 1, routes: vec![] }]));
    let metering = FakeMetering::new(Feed::tables(vec![AccessTable { generation: 1, ..AccessTable::default() }]));
    serve(tonic::service::Routes::new(routes.service()).add_service(metering.service())).await
}

/// Waits until the server closes `conn` (EOF or an error), whatever it sends first.
async fn closed_by_server(mut conn: TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let until_closed = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(CLOSED_WITHIN, until_closed).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_headers_are_closed_while_normal_calls_succeed() {
    let cp = control_plane().await;
    let mut cfg = Config::new(cp.url(), JOIN.into());
    cfg.header_read_timeout = Duration::from_secs(1);
    cfg.metering = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let edge = tokio::spawn(run(cfg, listener, shutdown.clone()));

    let opened = std::time::Instant::now();
    let mut slow = Vec::with_capacity(SLOW + SILENT);
    for i in 0..SLOW + SILENT {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        if i < SLOW {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Slow: ").await.expect("half a header");
        }
        slow.push(conn);
    }

    let http = reqwest::Client::new();
    for _ in 0..3 {
        let asked = std::time::Instant::now();
        let resp = http.get(format!("http://{addr}/healthz")).send().await.expect("healthz while under slowloris");
        assert_eq!(resp.status(), 200);
        eprintln!("healthz under slowloris: {:?}", asked.elapsed());
    }

    let closed = join_all(slow.into_iter().map(closed_by_server)).await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} slow connections were still open after {CLOSED_WITHIN:?}");
    eprintln!("{} slow connections opened and all closed by the edge {:?} after the first", SLOW + SILENT, opened.elapsed());

    // A new connection: the pooled one idled past the 1 s header timeout, and the edge
    // may close it just as a request is sent on it.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let resp = fresh.get(format!("http://{addr}/healthz")).send().await.expect("healthz afterwards");
    assert_eq!(resp.status(), 200);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), edge).await.expect("the edge stops").expect("join").expect("run");
}
