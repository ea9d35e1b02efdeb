//! The marketplace in memory mode (the embedded default): plans priced in integer minor
//! units, publishing, subscribing, API keys, rate limits, quotas, and usage counted
//! exactly; no tenant sees another's keys, plans or usage.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use souq_tests::{TestCluster, apis::Api};

const HELLO: &str = "def handler(event):\n    return {\"hello\": event[\"path\"]}\n";

async fn call_with_key(c: &TestCluster, api: &Api, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    c.request("GET", &format!("/call/{}/x", api.slug), None, &[("x-api-key", key)], Vec::new()).await
}

#[tokio::test]
async fn a_consumer_subscribes_and_calls_with_a_key() {
    let c = TestCluster::builder().start().await;
    let (provider, api) = c.published().await;

    // Plans: the free plan exists from the start; a paid one in SAR round-trips exactly.
    let plans = format!("/api/v1/apis/{}/plans", api.id);
    let (s, p) = c.post(&plans, Some(&provider), json!({"name": "pro", "price_minor": 4999, "currency": "SAR", "monthly_quota": 100000, "rate_limit_per_minute": 600})).await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["plan"]["price_minor"], 4999);
    assert_eq!(p["plan"]["currency"], "SAR");
    let (s, list) = c.get(&plans, Some(&provider)).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list["plans"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"free") && names.contains(&"pro"), "{list}");
    for (body, field) in [
        (json!({"name": "x", "price_minor": 1.5, "currency": "USD", "monthly_quota": 1, "rate_limit_per_minute": 1}), "price_minor"),
        (json!({"name": "x", "price_minor": -1, "currency": "USD", "monthly_quota": 1, "rate_limit_per_minute": 1}), "price_minor"),
        (json!({"name": "x", "price_minor": 1, "currency": "EUR", "monthly_quota": 1, "rate_limit_per_minute": 1}), "currency"),
    ] {
        let (s, r) = c.post(&plans, Some(&provider), body).await;
        assert_eq!(s, 422, "{r}");
        assert_eq!(r["field"], field, "{r}");
    }

    // The marketplace lists it with its plans, without a token, searchable.
    let (s, m) = c.get("/api/v1/marketplace?q=gold", None).await;
    assert_eq!(s, 200, "{m}");
    let entry = m["apis"].as_array().unwrap().iter().find(|e| e["slug"] == api.slug.as_str()).expect("listed");
    assert_eq!(entry["plans"].as_array().unwrap().len(), 2, "{entry}");
    let (_, none) = c.get("/api/v1/marketplace?q=no-such-thing-at-all", None).await;
    assert_eq!(none["apis"].as_array().unwrap().len(), 0);

    let (token, key) = c.consumer().await;
    assert!(key.starts_with("souq_") && key.len() >= 5 + 8 + 1 + 22, "{key}");
    // Without a subscription: 403.
    let (s, _, r) = call_with_key(&c, &api, &key).await;
    assert_eq!(s, 403, "{r}");
    let (s, sub) = c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(&token), json!({"plan": "pro"})).await;
    assert_eq!(s, 201, "{sub}");
    assert_eq!(sub["subscription"]["plan"]["price_minor"], 4999);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (s, h, r) = call_with_key(&c, &api, &key).await;
        if s == 200 {
            assert_eq!(r, json!({"hello": "/x"}));
            assert_eq!(h["ratelimit-limit"], "600");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s} {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A key in the URL is refused, and never reaches the handler.
    let (s, _, r) = c.request("GET", &format!("/call/{}/x?api_key={key}", api.slug), None, &[], Vec::new()).await;
    assert_eq!(s, 400, "{r}");
    // Keys are listed by prefix only.
    let (_, keys) = c.get("/api/v1/keys", Some(&token)).await;
    assert!(!keys.to_string().contains(&key[key.len() - 20..]), "{keys}");
    c.stop().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_a_second() {
    let c = TestCluster::builder().start().await;
    let (_provider, api) = c.published().await;
    let (token, key) = c.consumer().await;
    let (s, _) = c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(&token), json!({})).await;
    assert_eq!(s, 201);
    let mut ok = false;
    for _ in 0..100 {
        if call_with_key(&c, &api, &key).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the key never worked");
    let (_, keys) = c.get("/api/v1/keys", Some(&token)).await;
    let id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let (s, r) = c.delete(&format!("/api/v1/keys/{id}"), Some(&token)).await;
    assert_eq!(s, 200, "{r}");
    let revoked = std::time::Instant::now();
    loop {
        let (s, _, _) = call_with_key(&c, &api, &key).await;
        if s == 401 {
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(1), "still {s} after {:?}", revoked.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.stop().await;
}

#[tokio::test]
async fn a_burst_gets_429_with_a_correct_retry_after_then_passes() {
    let c = TestCluster::builder().start().await;
    let (_provider, api) = c.published().await;
    let (token, key) = c.consumer().await;
    // The free plan: 60 a minute.
    c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(&token), json!({})).await;
    let (mut passed, mut limited, mut retry) = (0, 0, 0u64);
    for _ in 0..90 {
        let (s, h, r) = call_with_key(&c, &api, &key).await;
        match s {
            200 => passed += 1,
            429 => {
                limited += 1;
                assert_eq!(r["type"], "urn:souq:problem:rate-limited", "{r}");
                retry = h["retry-after"].to_str().unwrap().parse().unwrap();
                assert_eq!(h["ratelimit-remaining"], "0");
            }
            403 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("{other} {r}"),
        }
    }
    assert!((55..=61).contains(&passed), "{passed} passed");
    assert!(limited >= 25, "{limited} limited");
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (s, _, r) = call_with_key(&c, &api, &key).await;
    assert_eq!(s, 200, "after waiting: {r}");
    c.stop().await;
}

#[tokio::test]
async fn quota_exhaustion_is_quota_exceeded() {
    let c = TestCluster::builder().start().await;
    let (provider, api) = c.published().await;
    let (s, _) = c.post(&format!("/api/v1/apis/{}/plans", api.id), Some(&provider), json!({"name": "tiny", "price_minor": 100, "currency": "EGP", "monthly_quota": 3, "rate_limit_per_minute": 1000})).await;
    assert_eq!(s, 201);
    let (token, key) = c.consumer().await;
    c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(&token), json!({"plan": "tiny"})).await;
    let mut codes = Vec::new();
    for _ in 0..200 {
        let (s, h, r) = call_with_key(&c, &api, &key).await;
        if s == 403 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        codes.push(s);
        if s == 429 {
            assert_eq!(r["type"], "urn:souq:problem:quota-exceeded", "{r}");
            assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 0);
            break;
        }
    }
    assert_eq!(codes, [200, 200, 200, 429]);
    // The consumer's view: 3 calls, none left, the plan's price in its currency.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, u) = c.get("/api/v1/usage", Some(&token)).await;
        let sub = &u["subscriptions"][0];
        if sub["calls"] == 3 {
            assert_eq!(sub["quota_left"], 0, "{u}");
            assert_eq!((sub["cost_minor"].as_u64(), sub["currency"].as_str()), (Some(100), Some("EGP")), "{u}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{u}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, st) = c.get("/api/v1/usage/statement", Some(&token)).await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["lines"][0]["calls"], 3, "{st}");
    assert_eq!(st["totals"], json!([{"currency": "EGP", "amount_minor": 100}]), "{st}");
    c.stop().await;
}

#[tokio::test]
async fn tenants_never_see_each_others_keys_plans_or_usage() {
    let c = TestCluster::builder().start().await;
    let (provider, api) = c.published().await;
    let (token, _key) = c.consumer().await;
    let (_, keys) = c.get("/api/v1/keys", Some(&token)).await;
    let key_id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let stranger = c.user().await;
    assert_eq!(c.delete(&format!("/api/v1/keys/{key_id}"), Some(&stranger)).await.0, 404);
    assert_eq!(c.get(&format!("/api/v1/apis/{}/usage", api.id), Some(&stranger)).await.0, 404);
    let (s, r) = c.post(&format!("/api/v1/apis/{}/plans", api.id), Some(&stranger), json!({"name": "mine", "price_minor": 0, "currency": "USD", "monthly_quota": 1, "rate_limit_per_minute": 1})).await;
    assert_eq!(s, 404, "{r}");
    let (_, theirs) = c.get("/api/v1/keys", Some(&stranger)).await;
    assert_eq!(theirs["keys"].as_array().unwrap().len(), 0);
    let (_, u) = c.get("/api/v1/usage", Some(&stranger)).await;
    assert_eq!(u["subscriptions"].as_array().unwrap().len(), 0, "{u}");
    // A private API's plans are not shown to others, and it cannot be subscribed to.
    let private = c.create_api(&provider, "Private Thing", "python", HELLO).await;
    assert_eq!(c.get(&format!("/api/v1/apis/{}/plans", private.id), Some(&stranger)).await.0, 404);
    let (s, r) = c.post(&format!("/api/v1/marketplace/{}/subscribe", private.slug), Some(&stranger), json!({})).await;
    assert_eq!(s, 404, "{r}");
    // Publishing needs a verified address.
    let unverified = c.unverified_user().await;
    let mine = c.create_api(&unverified, "Unverified", "python", HELLO).await;
    let (s, r) = c.patch(&format!("/api/v1/apis/{}", mine.id), Some(&unverified), json!({"public": true})).await;
    assert_eq!(s, 403, "{r}");
    c.stop().await;
}
