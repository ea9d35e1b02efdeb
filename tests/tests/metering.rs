//! Metering that never loses or double-counts a call: against a real Redis (its own
//! server, persistent, restarted mid-run) and in memory; through flusher crashes before
//! and after the control plane's commit, and an edge crash.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::json;
use souq_tests::{TestCluster, apis::Api, redis::TestRedis};

const HELLO: &str = "def handler(event):\n    return {\"ok\": True}\n";

/// A published API, and a consumer subscribed to a roomy plan with a key.
async fn setup(c: &TestCluster) -> (Api, String, String) {
    let provider = c.verified_user().await;
    let api = c.create_api(&provider, "Metered", "python", HELLO).await;
    let (s, r) = c.patch(&format!("/api/v1/apis/{}", api.id), Some(&provider), json!({"public": true})).await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = c
        .post(&format!("/api/v1/apis/{}/plans", api.id), Some(&provider), json!({"name": "bulk", "price_minor": 250, "currency": "AED", "monthly_quota": 1_000_000, "rate_limit_per_minute": 100_000}))
        .await;
    assert_eq!(s, 201, "{r}");
    c.deploy(&provider, &api, json!({})).await;
    let consumer = c.user().await;
    let (s, k) = c.post("/api/v1/keys", Some(&consumer), json!({"name": "meter"})).await;
    assert_eq!(s, 201, "{k}");
    let (s, r) = c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(&consumer), json!({"plan": "bulk"})).await;
    assert_eq!(s, 201, "{r}");
    let key = k["key"].as_str().unwrap().to_owned();
    // Wait until the edge has the subscription and the route.
    for _ in 0..200 {
        if c.request("GET", &format!("/call/{}/", api.slug), None, &[("x-api-key", &key)], Vec::new()).await.0 == 200 {
            return (api, consumer, key);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the key never worked");
}

/// Makes `n` calls with the key; returns how many answered 200.
async fn calls(c: &TestCluster, api: &Api, key: &str, n: usize) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        let (s, _, _) = c.request("GET", &format!("/call/{}/", api.slug), None, &[("x-api-key", key)], Vec::new()).await;
        if s == 200 {
            ok += 1;
        }
    }
    ok
}

/// The subscription's committed calls this month, once they stop changing and equal
/// `want` (or panics with what they were).
async fn settles_at(c: &TestCluster, consumer: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    while tokio::time::Instant::now() < deadline {
        let (_, u) = c.get("/api/v1/usage", Some(consumer)).await;
        seen = u["subscriptions"][0]["calls"].as_u64().unwrap_or(0);
        if seen == want {
            // Stays there: nothing is counted twice by a late flush.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let (_, u) = c.get("/api/v1/usage", Some(consumer)).await;
            assert_eq!(u["subscriptions"][0]["calls"].as_u64(), Some(want), "{u}");
            return;
        }
        assert!(seen < want, "counted {seen}, more than the {want} calls made");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("usage stuck at {seen}, want {want}");
}

#[tokio::test]
async fn n_calls_count_exactly_n_in_memory_mode() {
    let c = TestCluster::builder().start().await;
    let (api, consumer, key) = setup(&c).await;
    let ok = calls(&c, &api, &key, 150).await;
    assert_eq!(ok, 150);
    // +1: the call in setup that proved the key works.
    settles_at(&c, &consumer, 151).await;
    c.stop().await;
}

#[tokio::test]
async fn n_calls_count_exactly_n_with_redis_through_flusher_crashes() {
    let redis = TestRedis::start().await;
    let c = TestCluster::builder().redis(&redis.url).start().await;
    let (api, consumer, key) = setup(&c).await;
    let mut total = 1 + calls(&c, &api, &key, 100).await;
    settles_at(&c, &consumer, total).await;

    // The flusher dies after the control plane committed, before it deleted its copies:
    // the batch is sent again after the restart and counts nothing new.
    c.flush_faults().crash_after_commit_once();
    total += calls(&c, &api, &key, 100).await;
    settles_at(&c, &consumer, total).await;
    assert!(!c.flush_faults().armed(), "the flusher never crashed after a commit");

    // The flusher dies before the commit: the events wait in Redis and count once.
    c.flush_faults().crash_before_commit_once();
    total += calls(&c, &api, &key, 100).await;
    settles_at(&c, &consumer, total).await;
    assert!(!c.flush_faults().armed(), "the flusher never crashed before a commit");
    c.stop().await;
}

#[tokio::test]
async fn a_redis_restart_and_an_edge_crash_lose_nothing() {
    let mut redis = TestRedis::start().await;
    let mut c = TestCluster::builder().redis(&redis.url).start().await;
    let (api, consumer, key) = setup(&c).await;
    let mut total = 1 + calls(&c, &api, &key, 50).await;

    // Redis restarts in the middle of a run (its append-only file keeps what it acked).
    let caller = {
        let (http, url, slug, key) = (c.http.clone(), c.url.clone(), api.slug.clone(), key.clone());
        tokio::spawn(async move {
            let mut answered = 0u64;
            for _ in 0..150 {
                let r = http.get(format!("{url}/call/{slug}/")).header("x-api-key", &key).send().await.unwrap();
                if r.status() == 200 {
                    answered += 1;
                }
            }
            answered
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.restart().await;
    total += caller.await.unwrap();
    settles_at(&c, &consumer, total).await;

    // The edge dies with events not yet flushed; a new edge with the same id flushes them.
    total += calls(&c, &api, &key, 50).await;
    c.crash_edge().await;
    c.start_edge().await;
    settles_at(&c, &consumer, total).await;
    c.stop().await;
}
