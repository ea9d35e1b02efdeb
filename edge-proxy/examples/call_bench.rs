//! What metering and rate limiting cost on the data path, measured alone: the edge's
//! router over real HTTP, calling a stand-in agent that answers at once, with an API key
//! under a roomy plan. Metering off, then in memory, then in Redis (when one answers at
//! `SOUQ_REDIS_URL`, default redis://127.0.0.1:6379). Run it in release mode:
//!
//! ```text
//! cargo run --release -p souq-edge-proxy --example call_bench -- [seconds]
//! ```
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use souq_edge_proxy::{AppState, Config, access::credential::key_hash, router};
use souq_proto::{
    agent::{
        DeployRequest, ExecuteRequest, ExecuteResult, InstanceStatus, InvokeRequest, InvokeResult, LogLine,
        LogsRequest, ResultKind, StopRequest, StopResult,
        agent_server::{Agent, AgentServer},
    },
    routes::{
        AccessTable, Backend, Grant, KeyEntry, Route, RouteTable, UsageAck, UsageBatch, WatchAccessRequest,
        WatchRoutesRequest, routes_client::RoutesClient, routes_server,
    },
};
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status};

const JOIN: &str = "bench-join-token-0123456789";
const KEY: &str = "souq_benchbch_0123456789abcdefghijklmnopqrstuv";

struct Echo;

#[tonic::async_trait]
impl Agent for Echo {
    type LogsStream = tokio_stream::Empty<Result<LogLine, Status>>;
    async fn execute(&self, _: tonic::Request<ExecuteRequest>) -> Result<Response<ExecuteResult>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn deploy(&self, _: tonic::Request<DeployRequest>) -> Result<Response<InstanceStatus>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn stop(&self, _: tonic::Request<StopRequest>) -> Result<Response<StopResult>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn logs(&self, _: tonic::Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn invoke(&self, _: tonic::Request<InvokeRequest>) -> Result<Response<InvokeResult>, Status> {
        Ok(Response::new(InvokeResult { kind: ResultKind::Json as i32, body: br#"{"ok":true}"#.to_vec(), duration_ms: 0 }))
    }
}

/// A control plane that commits every batch it gets.
struct Commits;

#[tonic::async_trait]
impl routes_server::Routes for Commits {
    type WatchRoutesStream = tokio_stream::Empty<Result<RouteTable, Status>>;
    type WatchAccessStream = tokio_stream::Empty<Result<AccessTable, Status>>;
    async fn watch_routes(&self, _: tonic::Request<WatchRoutesRequest>) -> Result<Response<Self::WatchRoutesStream>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn watch_access(&self, _: tonic::Request<WatchAccessRequest>) -> Result<Response<Self::WatchAccessStream>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn report_usage(&self, req: tonic::Request<UsageBatch>) -> Result<Response<UsageAck>, Status> {
        let b = req.into_inner();
        let through = b.events.last().map(|e| e.position.clone()).unwrap_or_default();
        Ok(Response::new(UsageAck { committed_through: through, committed: b.events.len() as u32 }))
    }
}

async fn start_control_plane() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(routes_server::RoutesServer::new(Commits))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

async fn start_agent() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(Echo))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

/// An edge (without its control-plane followers) on a real port; returns its URL.
async fn start_edge(agent: &str, cp: &str, adjust: impl FnOnce(&mut Config)) -> String {
    let mut cfg = Config::new(cp.into(), JOIN.into());
    cfg.edge_id = Some(format!("bench-{}", uuid::Uuid::new_v4().simple()));
    adjust(&mut cfg);
    let state = AppState::new(&cfg, CancellationToken::new()).unwrap();
    state.routing.install(RouteTable {
        generation: 1,
        routes: vec![Route {
            slug: "bench".into(),
            api_id: "api".into(),
            owner_id: "owner".into(),
            public: true,
            timeout_ms: 5000,
            backends: vec![Backend { instance_id: "i".into(), agent_addr: agent.into(), node: "n".into(), version: 1 }],
        }],
    });
    state.access.install(AccessTable {
        generation: 1,
        keys: vec![KeyEntry { sha256: key_hash(KEY).to_vec(), key_id: "k".into(), user_id: "consumer".into() }],
        grants: vec![Grant {
            subscription_id: format!("sub-{}", uuid::Uuid::new_v4().simple()),
            user_id: "consumer".into(),
            api_id: "api".into(),
            plan_id: "p".into(),
            rate_limit_per_minute: 100_000_000,
            monthly_quota: 1_000_000_000_000,
            used_this_month: 0,
            month: String::new(),
        }],
    });
    if let Some(w) = state.meter.redis_writer(CancellationToken::new()) {
        tokio::spawn(w);
    }
    if let Some(shared) = state.meter.shared() {
        let routes = RoutesClient::new(tonic::transport::Endpoint::from_shared(cp.to_owned()).unwrap().connect_lazy());
        let flusher = souq_edge_proxy::meter::flush::Flusher {
            shared: shared.clone(),
            routes,
            join_token: JOIN.into(),
            interval: cfg.flush_interval,
            faults: Arc::default(),
        };
        tokio::spawn(flusher.supervise(CancellationToken::new()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/call/bench/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    url
}

/// Calls per second over `secs` with `conc` calls in flight.
async fn throughput(http: &reqwest::Client, url: &str, conc: usize, secs: u64) -> f64 {
    let until = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (http, url, done) = (http.clone(), url.to_owned(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < until {
                let r = http.get(&url).header("x-api-key", KEY).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    while tasks.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let redis = std::env::var("SOUQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis_up = redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.is_ok();
    let agent = start_agent().await;
    let cp = start_control_plane().await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    // (name, metering, Redis URL)
    let mut modes = vec![("off", false, None), ("memory", true, None)];
    if redis_up {
        modes.push(("redis", true, Some(redis.clone())));
    }
    println!("edge data path, stand-in agent, API key under a plan, {secs} s per run");
    let mut base: Option<(f64, f64)> = None;
    for (name, metering, redis_url) in modes {
        let url = start_edge(&agent, &cp, |c| (c.metering, c.redis_url) = (metering, redis_url)).await;
        throughput(&http, &url, 16, 1).await; // warm up
        let r16 = throughput(&http, &url, 16, secs).await;
        let r64 = throughput(&http, &url, 64, secs).await;
        match base {
            None => {
                println!("metering {name:<7} c16 {r16:>7.0}/s   c64 {r64:>7.0}/s");
                base = Some((r16, r64));
            }
            Some((b16, b64)) => println!(
                "metering {name:<7} c16 {r16:>7.0}/s ({:+.1} %)   c64 {r64:>7.0}/s ({:+.1} %)",
                100.0 * (r16 - b16) / b16,
                100.0 * (r64 - b64) / b64
            ),
        }
    }
}
