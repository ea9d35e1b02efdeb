//! The edge's `run` against a fake control plane and a fake agent on real ports: it
//! follows the route and access tables, serves a call with an API key, and at shutdown
//! drains in stages, so the call's usage reaches the control plane in the last report
//! (in memory, and through the Redis stream when a Redis answers).
use std::time::Duration;

use serde_json::Value;
use souq_edge_proxy::{Config, access::credential::key_hash, run};
use souq_proto::metering::{AccessTable, Grant, KeyEntry};
use souq_proto::routes::{Backend, Route, RouteTable};
use souq_test_support::{FakeAgent, FakeMetering, FakeRoutes, Feed, Served, serve};
use tokio_util::sync::CancellationToken;

const JOIN: &str = "join-token-0123456789";
const KEY: &str = "souq_runtests_0123456789abcdefghijklmnopq";

/// A control plane serving one route to `agent` and one key with a grant (subscription
/// `sub`), and committing every report.
async fn control_plane(agent: &str, sub: &str) -> (Served, FakeMetering) {
    let backend = Backend { instance_id: "i1".into(), agent_addr: agent.into(), node: "n1".into(), version: 1 };
    let route = Route {
        slug: "echo".into(),
        api_id: "api-echo".into(),
        owner_id: "owner".into(),
        public: true,
        timeout_ms: 5_000,
        backends: vec![backend],
    };
    let routes = FakeRoutes::new(Feed::tables(vec![RouteTable { generation: 1, routes: vec![route] }]))
        .expecting_join_token(JOIN);
    let access = AccessTable {
        generation: 1,
        keys: vec![KeyEntry { sha256: key_hash(KEY).to_vec(), key_id: "k1".into(), user_id: "consumer".into() }],
        grants: vec![Grant {
            subscription_id: sub.into(),
            user_id: "consumer".into(),
            api_id: "api-echo".into(),
            plan_id: "plan".into(),
            rate_limit_per_minute: 1_000,
            monthly_quota: 1_000,
            used_this_month: 0,
            month: String::new(),
        }],
    };
    let metering = FakeMetering::new(Feed::tables(vec![access])).expecting_join_token(JOIN);
    let served = serve(tonic::service::Routes::new(routes.service()).add_service(metering.service())).await;
    (served, metering)
}

/// Polls `/readyz` until both tables arrived; fails after 10 s.
async fn tables_arrive(http: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(resp) = http.get(format!("{base}/readyz")).send().await {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if body["routes"]["received"] == true && body["access"]["received"] == true {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the tables never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs an edge with `adjust`ed config, makes one call under subscription `sub`, stops
/// the edge, and returns how many events the control plane counted by the time `run`
/// returned.
async fn one_call_then_shutdown(sub: &str, adjust: impl FnOnce(&mut Config)) -> u64 {
    let agent = FakeAgent::echo().expecting_join_token(JOIN).serve().await;
    let (cp, metering) = control_plane(&agent.url(), sub).await;
    let mut cfg = Config::new(cp.url(), JOIN.into());
    // Reports only at shutdown, so what arrives was sent by the drain.
    cfg.flush_interval = Duration::from_secs(60);
    adjust(&mut cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let edge = tokio::spawn(run(cfg, listener, shutdown.clone()));

    let http = reqwest::Client::new();
    tables_arrive(&http, &base).await;
    let resp = http.post(format!("{base}/call/echo/x")).header("x-api-key", KEY).body("hi").send().await.expect("call");
    assert_eq!(resp.status(), 200);
    assert_eq!(metering.counted(), 0, "nothing is reported before shutdown");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), edge).await.expect("the edge stops").expect("join").expect("run");
    metering.counted()
}

#[tokio::test]
async fn the_last_usage_is_reported_at_shutdown_from_memory() {
    assert_eq!(one_call_then_shutdown("sub-memory", |_| {}).await, 1);
}

#[tokio::test]
async fn the_last_usage_is_reported_at_shutdown_through_redis() {
    let url = std::env::var("SOUQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let Ok(mut conn) = redis::Client::open(url.as_str()).expect("url").get_multiplexed_async_connection().await else {
        eprintln!("no Redis for this test; skipped");
        return;
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let (edge_id, sub) = (format!("test-run-{run_id}"), format!("test-sub-{run_id}"));
    let id = edge_id.clone();
    let counted = one_call_then_shutdown(&sub, move |cfg| {
        cfg.redis_url = Some(url);
        cfg.edge_id = Some(id);
    })
    .await;
    assert_eq!(counted, 1, "the writer handed the event over before the flusher's last report");
    let month = chrono::Utc::now().format("%Y-%m");
    let keys = [format!("souq:usage:{edge_id}"), format!("souq:rl:{{{sub}}}"), format!("souq:quota:{{{sub}}}:{month}")];
    let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
}

#[tokio::test]
async fn a_bad_config_is_refused_before_serving() {
    let mut cfg = Config::new("http://127.0.0.1:1".into(), JOIN.into());
    cfg.edge_id = Some("no/slashes".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = run(cfg, listener, CancellationToken::new()).await.expect_err("refused");
    assert!(err.to_string().starts_with("--edge-id"), "{err}");
}
