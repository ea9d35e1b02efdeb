//! The data path's attempts against real gRPC peers on loopback: a fake agent, a closed
//! port, and a host that takes the request and dies without a word.
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use souq_proto::{
    agent::ResultKind,
    routes::{Backend as WireBackend, Route as WireRoute, RouteTable as WireTable},
};
use souq_test_support::agent::{Behaviour, FakeAgent};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;
use crate::route_table::RouteTable;

const TIMEOUT: Duration = Duration::from_secs(5);

fn table(addrs: &[String]) -> RouteTable {
    let backends = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| WireBackend {
            instance_id: format!("i-{i}"),
            agent_addr: a.clone(),
            node: format!("n-{i}"),
            version: 1,
        })
        .collect();
    let wire = WireTable {
        generation: 1,
        routes: vec![WireRoute {
            slug: "a".into(),
            api_id: "id".into(),
            owner_id: "o".into(),
            public: false,
            timeout_ms: 5000,
            backends,
        }],
    };
    RouteTable::from_wire(wire, &Default::default())
}

fn clients() -> AgentClients {
    AgentClients::new("join-token-0123456789", DIALING).expect("token")
}

/// A loopback port nothing listens on: bound, read, and released.
async fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    format!("http://{}", l.local_addr().expect("addr"))
}

/// A host that takes one HTTP/2 connection, reads the request and dies, as a killed agent
/// does mid-call.
async fn dying_host() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let _ = c.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
            let mut buf = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
        }
    });
    format!("http://{addr}")
}

/// An agent that echoes and counts its calls.
fn counting() -> (FakeAgent, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let agent = FakeAgent::new(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        Behaviour::Echo
    });
    (agent, calls)
}

#[test]
fn failures_are_sorted_by_whether_anything_ran() {
    let wire = |k: Kind| tonic::Status::from(WireError::new(k, "x"));
    assert_eq!(failure(&outcome::not_run(wire(Kind::Unavailable))), Failure::NotRun);
    assert_eq!(failure(&outcome::not_run(wire(Kind::NoCapacity))), Failure::NotRun);
    assert_eq!(failure(&wire(Kind::NotFound)), Failure::NotRun, "an agent from before the mark");
    assert_eq!(failure(&wire(Kind::Unavailable)), Failure::Lost, "the instance stopped during the call");
    assert_eq!(failure(&tonic::Status::unknown("transport error")), Failure::Lost);
    assert_eq!(failure(&tonic::Status::unavailable("connection reset")), Failure::Lost);
    assert_eq!(failure(&wire(Kind::Timeout)), Failure::Answered);
    assert_eq!(failure(&wire(Kind::ResponseTooLarge)), Failure::Answered);
    assert_eq!(failure(&wire(Kind::Unauthenticated)), Failure::Answered);
}

#[test]
fn idempotent_methods() {
    for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE] {
        assert!(idempotent(&m), "{m}");
    }
    for m in [Method::POST, Method::PATCH, Method::CONNECT, Method::TRACE] {
        assert!(!idempotent(&m), "{m}");
    }
}

#[test]
fn platform_faults_are_not_the_callers() {
    assert_eq!(agent_error(tonic::Status::unauthenticated("bad join token")).status, StatusCode::BAD_GATEWAY);
    assert_eq!(agent_error(tonic::Status::out_of_range("too big")).status, StatusCode::BAD_GATEWAY);
    let timeout: tonic::Status = WireError::new(Kind::Timeout, "too slow").into();
    let e = agent_error(timeout);
    assert_eq!((e.status, e.kind), (StatusCode::GATEWAY_TIMEOUT, "timeout"));
    let e = ApiError::from(InvokeError::NoReplica);
    assert_eq!((e.status, e.retry_after), (StatusCode::SERVICE_UNAVAILABLE, Some(1)));
    let e = ApiError::from(InvokeError::Lost);
    assert_eq!((e.status, e.kind), (StatusCode::BAD_GATEWAY, "upstream-lost"));
    assert_eq!(e.detail, "the API's host was lost during the call; it may have run");
}

#[tokio::test]
async fn unreachable_replicas_are_skipped_and_none_left_is_503() {
    let table = table(&[closed_port().await, closed_port().await]);
    let route = table.get("a").expect("route");
    let out = invoke(&clients(), route, &Method::POST, b"{}".to_vec(), TIMEOUT).await;
    assert!(matches!(out, Err(InvokeError::NoReplica)), "{out:?}");
}

#[tokio::test]
async fn a_post_moves_on_only_from_a_replica_that_ran_nothing() {
    let (agent, calls) = counting();
    let served = agent.serve().await;
    let refusing =
        FakeAgent::new(|_| Behaviour::Fail(outcome::not_run(WireError::new(Kind::Unavailable, "draining").into())));
    let refusing = refusing.serve().await;
    for first in [closed_port().await, refusing.url()] {
        let table = table(&[first, served.url()]);
        let (result, node) = invoke(&clients(), table.get("a").expect("route"), &Method::POST, b"{}".to_vec(), TIMEOUT)
            .await
            .expect("the second replica answers");
        assert_eq!((result.kind, node), (ResultKind::Json as i32, "n-1"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_post_whose_host_is_lost_is_not_run_again() {
    let (agent, calls) = counting();
    let served = agent.serve().await;
    let table = table(&[dying_host().await, served.url()]);
    let out = invoke(&clients(), table.get("a").expect("route"), &Method::POST, b"{}".to_vec(), TIMEOUT).await;
    assert!(matches!(out, Err(InvokeError::Lost)), "{out:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the other replica never saw it");
    // The agent's own word that the instance stopped during the call is the same.
    let stopping = FakeAgent::new(|_| Behaviour::Fail(WireError::new(Kind::Unavailable, "stopped").into()));
    let stopping = stopping.serve().await;
    let table = self::table(&[stopping.url(), served.url()]);
    let out = invoke(&clients(), table.get("a").expect("route"), &Method::POST, b"{}".to_vec(), TIMEOUT).await;
    assert!(matches!(out, Err(InvokeError::Lost)), "{out:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_get_whose_host_is_lost_runs_on_the_next() {
    let (agent, calls) = counting();
    let served = agent.serve().await;
    let table = table(&[dying_host().await, served.url()]);
    let (_, node) = invoke(&clients(), table.get("a").expect("route"), &Method::GET, b"{}".to_vec(), TIMEOUT)
        .await
        .expect("the second replica answers");
    assert_eq!((node, calls.load(Ordering::SeqCst)), ("n-1", 1));
    // With no replica left, the answer is still definite.
    let table = self::table(&[dying_host().await]);
    let out = invoke(&clients(), table.get("a").expect("route"), &Method::GET, b"{}".to_vec(), TIMEOUT).await;
    assert!(matches!(out, Err(InvokeError::Lost)), "{out:?}");
}

#[tokio::test]
async fn an_answered_error_is_not_retried() {
    let (agent, calls) = counting();
    let served = agent.serve().await;
    let slow = FakeAgent::new(|_| Behaviour::Fail(WireError::new(Kind::Timeout, "too slow").into())).serve().await;
    let table = table(&[slow.url(), served.url()]);
    let out = invoke(&clients(), table.get("a").expect("route"), &Method::GET, b"{}".to_vec(), TIMEOUT).await;
    assert!(matches!(out, Err(InvokeError::Status(ref s)) if s.code() == Code::DeadlineExceeded), "{out:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_retry_gets_only_the_time_left() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let agent = FakeAgent::new(move |req| {
        if let Ok(mut s) = record.lock() {
            s.push(req.timeout_ms);
        }
        Behaviour::Echo
    });
    let served = agent.serve().await;
    let table = table(&[dying_host().await, served.url()]);
    invoke(&clients(), table.get("a").expect("route"), &Method::PUT, b"{}".to_vec(), TIMEOUT).await.expect("answered");
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 1);
    assert!(got[0] >= 1 && got[0] < 5000, "{got:?}");
}
