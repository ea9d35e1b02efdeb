//! The classifier against what tonic really reports: a refused connection, a connect
//! timeout, a DNS failure, a refused HTTP/2 stream, and a server that takes the request
//! and dies; all on loopback.
use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
};
use tonic::transport::Endpoint;

use super::*;
use crate::{
    Kind, WireError,
    agent::{InvokeRequest, agent_client::AgentClient},
};

/// One Invoke to `url`, the way the edge dials (a short connect timeout), which must fail.
async fn invoke(url: &str) -> Status {
    let channel =
        Endpoint::from_shared(url.to_owned()).expect("url").connect_timeout(Duration::from_millis(300)).connect_lazy();
    let req = InvokeRequest { instance_id: "i".into(), event: b"{}".to_vec(), timeout_ms: 1000 };
    let mut client = AgentClient::new(channel);
    let status =
        tokio::time::timeout(Duration::from_secs(20), client.invoke(req)).await.expect("bounded").expect_err("fails");
    eprintln!("{url}: {status:?}");
    let mut cause: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(e) = cause {
        eprintln!("  caused by {e} / {e:?}");
        cause = e.source();
    }
    status
}

/// A loopback port nothing listens on: bound, read, and released.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn the_agents_word_is_no() {
    let plain: Status = WireError::new(Kind::NotFound, "no such instance").into();
    assert_eq!(reached(&plain), Reached::Maybe);
    let marked = not_run(plain);
    assert!(said_not_run(&marked));
    assert_eq!(reached(&marked), Reached::No);
    // The kind survives the mark.
    assert_eq!(WireError::from(&marked).kind, Kind::NotFound);
    assert!(souq_made(&marked));
    assert!(!souq_made(&Status::unavailable("connection reset")));
    assert_eq!(reached(&Status::unavailable("connection reset")), Reached::Maybe);
    assert_eq!(reached(&Status::unknown("transport error")), Reached::Maybe);
}

#[test]
fn the_mark_crosses_the_wire() {
    // What a server sends (a trailers-only answer) and what its client reads back.
    let sent: Status = not_run(WireError::new(Kind::Unavailable, "draining").into());
    let response = sent.into_http::<()>();
    let got = Status::from_header_map(response.headers()).expect("a status");
    assert_eq!(reached(&got), Reached::No);
    assert_eq!(WireError::from(&got).kind, Kind::Unavailable);
}

#[tokio::test]
async fn a_refused_connection_is_no() {
    let port = closed_port().await;
    let s = invoke(&format!("http://127.0.0.1:{port}")).await;
    assert_eq!(reached(&s), Reached::No);
}

#[tokio::test]
async fn a_connect_timeout_is_no() {
    // A listener that never accepts, its backlog filled: the kernel drops further SYNs.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(c)) => held.push(c),
            _ => break,
        }
    }
    let s = invoke(&format!("http://{addr}")).await;
    assert_eq!(reached(&s), Reached::No);
    drop(held);
}

#[tokio::test]
async fn a_dns_failure_is_no() {
    // `.invalid` never resolves (RFC 2606); the lookup fails without leaving the host's resolver.
    let s = invoke("http://souq-agent.invalid:9").await;
    assert_eq!(reached(&s), Reached::No);
}

#[tokio::test]
async fn a_refused_stream_is_no() {
    // A raw HTTP/2 peer: it reads the preface and the request, then refuses stream 1.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut c, _) = listener.accept().await.expect("accept");
        c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("settings");
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
        c.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.expect("settings ack");
        c.write_all(&[0, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 0, 7]).await.expect("rst_stream");
        // Keeps the connection open until the client has read the reset.
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    });
    let s = invoke(&format!("http://{addr}")).await;
    assert_eq!(reached(&s), Reached::No);
    server.abort();
}

#[tokio::test]
async fn a_server_that_dies_after_reading_is_maybe() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut c, _) = listener.accept().await.expect("accept");
        c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.expect("settings");
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
        // Gone without a word, as a killed agent is.
    });
    let s = invoke(&format!("http://{addr}")).await;
    assert_eq!(reached(&s), Reached::Maybe);
    server.abort();
}

/// An error of a given text and cause, standing for hyper's (not a dependency here).
#[derive(Debug)]
struct Link(&'static str, Option<Box<Link>>);

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for Link {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.1.as_deref().map(|l| l as &(dyn StdError + 'static))
    }
}

#[test]
fn a_request_hyper_gave_back_untaken_is_no() {
    // What tonic reported in tests/tests/definite_answers.rs for calls queued on an
    // agent's connection as it drained: Cancelled, hyper's Canceled, "connection closed".
    let status = |cause: &'static str| {
        let mut s = Status::cancelled("operation was canceled");
        s.set_source(std::sync::Arc::new(Link(
            "transport error",
            Some(Box::new(Link("operation was canceled", Some(Box::new(Link(cause, None)))))),
        )));
        s
    };
    assert_eq!(reached(&status("connection closed")), Reached::No);
    assert_eq!(reached(&status("connection was not ready")), Reached::No);
    assert_eq!(reached(&status("runtime dropped the dispatch task")), Reached::Maybe);
}
