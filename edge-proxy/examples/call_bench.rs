//! What metering and rate limiting cost on the data path, measured alone: the edge's
//! router over real HTTP, calling a fake agent that answers at once, with an API key
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
    agent::ResultKind,
    metering::{AccessTable, Grant, KeyEntry, metering_client::MeteringClient},
    routes::{Backend, Route, RouteTable},
};
use souq_test_support::{FakeAgent, FakeMetering};
use tokio_util::sync::CancellationToken;

const JOIN: &str = "bench-join-token-0123456789";
/// Names this run's Redis keys, removed at the end.
const RUN: &str = "call-bench";
const KEY: &str = "souq_benchbch_0123456789abcdefghijklmnopqrstuv";

/// An edge (without its control-plane followers) on a real port; returns its URL.
async fn start_edge(agent: &str, cp: &str, mode: Mode, adjust: impl FnOnce(&mut Config)) -> String {
    let mut cfg = Config::new(cp.into(), JOIN.into());
    cfg.edge_id = Some(format!("bench-{RUN}-{}", mode.name().replace(' ', "-")));
    adjust(&mut cfg);
    let mut state = AppState::new(&cfg, CancellationToken::new()).unwrap();
    match mode {
        Mode::RedisLimitsOnly => state.meter = souq_edge_proxy::meter::Meter::in_memory(),
        Mode::RedisMeterOnly => state.limiter = Arc::new(souq_edge_proxy::limit::Limiter::in_memory()),
        _ => {}
    }
    state.routes.install(RouteTable {
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
            subscription_id: format!("bench-{RUN}-{}", mode.name().replace(' ', "-")),
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
        let metering =
            MeteringClient::new(tonic::transport::Endpoint::from_shared(cp.to_owned()).unwrap().connect_lazy());
        let flusher =
            souq_edge_proxy::meter::flush::Flusher::new(shared.clone(), metering, JOIN.into(), cfg.flush_interval);
        tokio::spawn(flusher.supervise(CancellationToken::new()));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/call/bench/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    url
}

/// CPU seconds used so far by this process and by the local redis-server (if any).
fn cpu_secs() -> f64 {
    let ticks = |pid: &str| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name: utime and stime are the 12th and 13th.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0)
    };
    let redis: f64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "redis-server"))
        .map(|e| ticks(&e.file_name().to_string_lossy()))
        .sum();
    (ticks("self") + redis) / 100.0
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

/// Which parts of the data path's accounting run, and where.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    Memory,
    Redis,
    /// Limits in Redis, metering in memory: what the limiter's round trip costs.
    RedisLimitsOnly,
    /// Metering in Redis, limits in memory: what the stream's group commit costs.
    RedisMeterOnly,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Memory => "memory",
            Mode::Redis => "redis",
            Mode::RedisLimitsOnly => "redis limits only",
            Mode::RedisMeterOnly => "redis meter only",
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let rounds: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let redis = std::env::var("SOUQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis_up = redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.is_ok();
    // An agent that answers at once, and a control plane that commits every report; both
    // run until the bench ends.
    let agent = FakeAgent::answering(ResultKind::Json, br#"{"ok":true}"#).serve().await.url();
    let cp = FakeMetering::default().serve().await.url();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).tcp_nodelay(true).build().unwrap();
    let mut modes = vec![Mode::Off, Mode::Memory];
    if redis_up {
        modes.extend([Mode::Redis, Mode::RedisLimitsOnly, Mode::RedisMeterOnly]);
    }
    // SOUQ_BENCH_MODES=off,redis picks some.
    if let Ok(pick) = std::env::var("SOUQ_BENCH_MODES") {
        modes.retain(|m| pick.split(',').any(|p| p.trim() == m.name()));
    }
    let mut urls = Vec::new();
    for &mode in &modes {
        let redis_url = (!matches!(mode, Mode::Off | Mode::Memory)).then(|| redis.clone());
        let url = start_edge(&agent, &cp, mode, |c| (c.metering, c.redis_url) = (mode != Mode::Off, redis_url)).await;
        throughput(&http, &url, 16, 1).await; // warm up
        urls.push(url);
    }
    println!("edge data path, fake agent, API key under a plan: {rounds} rounds of {secs} s, medians");
    let mut results = vec![(Vec::new(), Vec::new()); modes.len()];
    // CPU µs per call at concurrency 64, this process and Redis together.
    let mut cpu = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (i, url) in urls.iter().enumerate() {
            results[i].0.push(throughput(&http, url, 16, secs).await);
            let before = cpu_secs();
            let rate = throughput(&http, url, 64, secs).await;
            cpu[i].push((cpu_secs() - before) * 1e6 / (rate * secs as f64));
            results[i].1.push(rate);
        }
    }
    if redis_up {
        let mut c = redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("souq:*{RUN}*")).query_async(&mut c).await.unwrap();
        if !keys.is_empty() {
            let _: i64 = redis::cmd("DEL").arg(keys).query_async(&mut c).await.unwrap();
        }
    }
    let medians: Vec<(f64, f64)> = results.into_iter().map(|(a, b)| (median(a), median(b))).collect();
    let (b16, b64) = medians[0];
    for ((mode, (r16, r64)), cpu) in modes.iter().zip(medians).zip(cpu) {
        println!(
            "{:<18} c16 {r16:>7.0}/s ({:+5.1} %)   c64 {r64:>7.0}/s ({:+5.1} %)   CPU {:>5.1} µs/call",
            mode.name(),
            100.0 * (r16 - b16) / b16,
            100.0 * (r64 - b64) / b64,
            median(cpu)
        );
    }
}
