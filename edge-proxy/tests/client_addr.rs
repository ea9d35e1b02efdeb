//! The client address each request carries (`ClientIp`, the key the control plane
//! throttles by), through the edge's real accept loop: `X-Forwarded-For` is believed
//! only from a trusted peer and only up to its right-most untrusted hop; a malformed
//! one gives the peer, never an error; IPv6 clients are keyed by their /64, over ::1.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use souq_edge_proxy::{
    client_addr::TrustedProxies,
    extract::ClientIp,
    serve::{Front, Limits, serve},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn limits() -> Limits {
    Limits {
        header_read: Duration::from_secs(10),
        body_read: Duration::from_secs(30),
        write: Duration::from_secs(30),
        max_connections: 100,
    }
}

/// Serves `GET /ip`, answering the request's `ClientIp`, on `bind`.
async fn echo(bind: &str, trusted: &[&str]) -> (SocketAddr, CancellationToken) {
    let trusted = TrustedProxies::parse(&trusted.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("cidrs");
    let front = Front { trusted_proxies: Arc::new(trusted), tls: None };
    let router = Router::new().route("/ip", get(|ClientIp(ip): ClientIp| async move { ip }));
    let listener = TcpListener::bind(bind).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, router, limits(), front, shutdown.clone()));
    (addr, shutdown)
}

/// The client the edge saw for a request with these `X-Forwarded-For` lines.
async fn seen(addr: SocketAddr, xff: &[&str]) -> String {
    let mut req = reqwest::Client::new().get(format!("http://{addr}/ip"));
    for line in xff {
        req = req.header("x-forwarded-for", *line);
    }
    let resp = req.send().await.expect("answer");
    assert_eq!(resp.status(), 200, "{xff:?}");
    resp.text().await.expect("body")
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_peers() {
    let (untrusting, stop_a) = echo("127.0.0.1:0", &[]).await;
    assert_eq!(seen(untrusting, &["203.0.113.9"]).await, "127.0.0.1", "no trusted proxies: XFF ignored");

    let (other, stop_b) = echo("127.0.0.1:0", &["10.0.0.0/8"]).await;
    assert_eq!(seen(other, &["203.0.113.9"]).await, "127.0.0.1", "the peer is not a trusted proxy");

    let (proxied, stop_c) = echo("127.0.0.1:0", &["127.0.0.0/8", "10.0.0.0/8"]).await;
    assert_eq!(seen(proxied, &[]).await, "127.0.0.1");
    assert_eq!(seen(proxied, &["203.0.113.9"]).await, "203.0.113.9");
    assert_eq!(seen(proxied, &["6.6.6.6, 203.0.113.9"]).await, "203.0.113.9", "spoofed left-most hop");
    assert_eq!(seen(proxied, &["garbage, 203.0.113.9, 10.1.1.1"]).await, "203.0.113.9", "trusted hops skipped");
    assert_eq!(seen(proxied, &["6.6.6.6", "203.0.113.9"]).await, "203.0.113.9", "several lines");
    assert_eq!(seen(proxied, &["2001:db8:1:2:3:4:5:6"]).await, "2001:db8:1:2::/64");
    assert_eq!(seen(proxied, &["::ffff:203.0.113.9"]).await, "203.0.113.9");
    for bad in ["garbage", "203.0.113.9:5555", "203.0.113.9,", "", "1.2.3.4 5.6.7.8"] {
        assert_eq!(seen(proxied, &[bad]).await, "127.0.0.1", "malformed {bad:?}");
    }
    for stop in [stop_a, stop_b, stop_c] {
        stop.cancel();
    }
}

#[tokio::test]
async fn ipv6_clients_are_keyed_by_their_64() {
    // Only where this host has IPv6 loopback.
    if TcpListener::bind("[::1]:0").await.is_err() {
        eprintln!("no ::1 here; skipped");
        return;
    }
    let (plain, stop_a) = echo("[::1]:0", &[]).await;
    assert_eq!(seen(plain, &["2001:db8::1"]).await, "::/64");
    let (proxied, stop_b) = echo("[::1]:0", &["::1"]).await;
    assert_eq!(seen(proxied, &["2001:db8:aa:bb:1::1"]).await, "2001:db8:aa:bb::/64");
    assert_eq!(seen(proxied, &["2001:db8:aa:bb:ffff::2"]).await, "2001:db8:aa:bb::/64");
    assert_eq!(seen(proxied, &["198.51.100.1, ::1"]).await, "198.51.100.1");
    stop_a.cancel();
    stop_b.cancel();
}
