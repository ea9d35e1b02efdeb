//! Per-user quotas and the unverified account: an unverified account executes but does
//! not deploy or create keys; over a quota the answer is 403 `quota` naming the limit;
//! the execute rate answers 429 with `Retry-After`; old versions past the quota are pruned.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use souq_control_plane::Quotas;
use souq_tests::TestCluster;

const HELLO: &str = "def handler(event):\n    return 'hello'\n";

/// POSTs JSON; returns status, headers and body.
async fn post(c: &TestCluster, path: &str, token: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let bytes = serde_json::to_vec(&body).unwrap();
    c.request("POST", path, Some(token), &[("content-type", "application/json")], bytes).await
}

/// Asserts a 403 `quota` problem+json that names `limit` in its `limit` and `detail`.
fn assert_quota(answer: &(u16, reqwest::header::HeaderMap, Value), limit: &str) {
    let (s, h, p) = answer;
    assert_eq!(*s, 403, "{p}");
    assert_eq!(h["content-type"], "application/problem+json", "{p}");
    assert_eq!(p["type"], "urn:souq:problem:quota", "{p}");
    assert_eq!(p["limit"], limit, "{p}");
    assert!(p["detail"].as_str().unwrap().contains(limit), "{p}");
}

/// Stops the APIs and waits (up to a minute) until their instances' containers are gone.
async fn stop_all(c: &TestCluster, token: &str, apis: &[&souq_tests::apis::Api]) {
    for api in apis {
        let (s, p) = c.post(&format!("/api/v1/apis/{}/stop", api.id), Some(token), json!({})).await;
        assert_eq!(s, 202, "{p}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !c.containers().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "instances left: {:?}", c.containers());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn unverified_accounts_execute_but_may_not_deploy_or_create_keys() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": "print(6 * 7)"})).await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("42\n")), "{r}");
    // An API may be written, but not deployed.
    let api = c.create_api(&t, "Draft", "python", HELLO).await;
    let (s, h, p) = post(&c, &format!("/api/v1/apis/{}/deploy", api.id), &t, json!({})).await;
    assert_eq!((s, &p["type"]), (403, &json!("urn:souq:problem:forbidden")), "{p}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(p["detail"].as_str().unwrap().contains("verify your email address"), "{p}");
    assert_eq!(c.api_status(&t, &api).await["state"], "stopped", "never deployed");
    let (s, _, p) = post(&c, "/api/v1/keys", &t, json!({"name": "laptop"})).await;
    assert_eq!((s, &p["type"]), (403, &json!("urn:souq:problem:forbidden")), "{p}");
    let (_, keys) = c.get("/api/v1/keys", Some(&t)).await;
    assert_eq!(keys["keys"], json!([]), "no key was made: {keys}");
    // Verified, the same steps pass.
    let v = c.user().await;
    let api = c.create_api(&v, "Live", "python", HELLO).await;
    let (s, _, p) = post(&c, &format!("/api/v1/apis/{}/deploy", api.id), &v, json!({})).await;
    assert_eq!(s, 202, "{p}");
    let (s, _, p) = post(&c, "/api/v1/keys", &v, json!({"name": "laptop"})).await;
    assert_eq!(s, 201, "{p}");
    stop_all(&c, &v, &[&api]).await;
    c.stop().await;
}

#[tokio::test]
async fn over_a_quota_is_403_quota_naming_the_limit() {
    let quotas = Quotas { apis: 2, replicas: 3, instance_memory_mb: 512, ..Quotas::DEFAULT };
    let c = TestCluster::builder().quotas(quotas).start().await;
    let t = c.user().await;
    let a = c.create_api(&t, "first", "python", HELLO).await;
    let b = c.create_api(&t, "second", "python", HELLO).await;
    let third = post(&c, "/api/v1/apis", &t, json!({"name": "third", "runtime": "python", "code": HELLO})).await;
    assert_quota(&third, "apis");
    // Another user has their own count.
    let other = c.user().await;
    c.create_api(&other, "theirs", "python", HELLO).await;

    // 3 replicas are within the replica quota but reserve 3 × 256 MiB, past 512 MiB.
    let deploy = |api: &souq_tests::apis::Api| format!("/api/v1/apis/{}/deploy", api.id);
    assert_quota(&post(&c, &deploy(&a), &t, json!({"replicas": 3})).await, "instance_memory_mb");
    let (s, _, p) = post(&c, &deploy(&a), &t, json!({"replicas": 2})).await;
    assert_eq!(s, 202, "{p}");
    // Redeploying the same API counts its replicas once.
    let (s, _, p) = post(&c, &deploy(&a), &t, json!({"replicas": 2})).await;
    assert_eq!(s, 202, "{p}");
    let over = post(&c, &deploy(&b), &t, json!({"replicas": 2})).await;
    assert_quota(&over, "replicas");
    assert!(over.2["detail"].as_str().unwrap().contains("run 2 replicas"), "{}", over.2);
    // A stopped deployment frees what it held.
    let (s, p) = c.post(&format!("/api/v1/apis/{}/stop", a.id), Some(&t), json!({})).await;
    assert_eq!(s, 202, "{p}");
    let (s, _, p) = post(&c, &deploy(&b), &t, json!({"replicas": 2})).await;
    assert_eq!(s, 202, "{p}");
    // Deleting an API frees its place.
    assert_eq!(c.delete(&format!("/api/v1/apis/{}", a.id), Some(&t)).await.0, 200);
    c.create_api(&t, "third", "python", HELLO).await;
    stop_all(&c, &t, &[&b]).await;
    c.stop().await;
}

#[tokio::test]
async fn executes_past_the_rate_get_429_with_retry_after_until_a_minute_passes() {
    let quotas = Quotas { executes_per_minute: 3, ..Quotas::DEFAULT };
    let c = TestCluster::builder().quotas(quotas).start().await;
    let t = c.unverified_user().await;
    let run = json!({"runtime": "python", "code": "print('ok')"});
    for _ in 0..3 {
        let (s, r) = c.execute(&t, run.clone()).await;
        assert_eq!(s, 200, "{r}");
    }
    let (s, h, p) = post(&c, "/api/v1/execute", &t, run.clone()).await;
    assert_eq!((s, &p["type"]), (429, &json!("urn:souq:problem:rate-limited")), "{p}");
    assert_eq!(p["limit"], "executes_per_minute", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("executes_per_minute"), "{p}");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Another user is not held back.
    let other = c.unverified_user().await;
    assert_eq!(c.execute(&other, run.clone()).await.0, 200);
    // The control plane's clock moves a minute on: the user executes again.
    c.clock.advance(Duration::from_secs(61));
    let (s, r) = c.execute(&t, run).await;
    assert_eq!(s, 200, "{r}");
    c.stop().await;
}

#[tokio::test]
async fn versions_past_the_quota_prune_the_oldest_that_no_deployment_uses() {
    let quotas = Quotas { versions_per_api: 3, ..Quotas::DEFAULT };
    let c = TestCluster::builder().agents(0).quotas(quotas).start().await;
    let t = c.user().await;
    let api = c.create_api(&t, "Edited", "python", HELLO).await;
    // Version 1 is deployed (no node runs it here; the deployment still names it).
    let (s, _, p) = post(&c, &format!("/api/v1/apis/{}/deploy", api.id), &t, json!({"version": 1})).await;
    assert_eq!(s, 202, "{p}");
    // Looping PUT /code stores no more than the quota.
    for i in 2..=20 {
        let code = format!("def handler(event):\n    return {i}\n");
        let (s, v) = c.put(&format!("/api/v1/apis/{}/code", api.id), Some(&t), json!({"code": code})).await;
        assert_eq!((s, &v["version"]), (200, &json!(i)), "{v}");
    }
    let (s, listed) = c.get(&format!("/api/v1/apis/{}/versions", api.id), Some(&t)).await;
    assert_eq!(s, 200, "{listed}");
    let kept: Vec<u64> = listed["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(kept, [1, 19, 20], "the deployed version and the newest stay: {listed}");
    // A pruned version is gone: deploying it is 404; the kept ones deploy.
    let (s, _, p) = post(&c, &format!("/api/v1/apis/{}/deploy", api.id), &t, json!({"version": 2})).await;
    assert_eq!(s, 404, "{p}");
    let (s, _, p) = post(&c, &format!("/api/v1/apis/{}/deploy", api.id), &t, json!({"version": 19})).await;
    assert_eq!(s, 202, "{p}");
    // Now version 1 is unused and goes at the next edit; 19 stays, being deployed.
    let (s, v) = c.put(&format!("/api/v1/apis/{}/code", api.id), Some(&t), json!({"code": HELLO})).await;
    assert_eq!(s, 200, "{v}");
    let (_, listed) = c.get(&format!("/api/v1/apis/{}/versions", api.id), Some(&t)).await;
    let kept: Vec<u64> = listed["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(kept, [19, 20, 21], "{listed}");
    c.stop().await;
}
