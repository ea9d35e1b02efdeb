//! Statements bill each period at the plan that was in force: a downgrade waits for the
//! next month and cannot rewrite this month or the past, an upgrade applies (and bills) at
//! once, and deleting an API keeps its consumers' past lines. The control plane's clock is
//! moved to the end of the month and past it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use souq_control_plane::{Clock, market::Month};
use souq_tests::{TestCluster, apis::Api};

const HELLO: &str = "def handler(event):\n    return {\"hello\": event[\"path\"]}\n";

/// A provider with a deployed, published API that has a `pro` plan at 49.99 SAR.
async fn published(c: &TestCluster) -> (String, Api) {
    let (provider, api) = c.published().await;
    let pro = json!({"name": "pro", "price_minor": 4999, "currency": "SAR", "monthly_quota": 100000, "rate_limit_per_minute": 600});
    let (s, r) = c.post(&format!("/api/v1/apis/{}/plans", api.id), Some(&provider), pro).await;
    assert_eq!(s, 201, "{r}");
    (provider, api)
}

async fn subscribe(c: &TestCluster, token: &str, api: &Api, plan: &str) -> Value {
    let (s, r) = c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(token), json!({"plan": plan})).await;
    assert_eq!(s, 201, "{r}");
    r["subscription"].clone()
}

/// Makes `n` calls with the key (waiting for the edge to hold the subscription first),
/// then waits until the consumer's usage counts them.
async fn calls(c: &TestCluster, token: &str, api: &Api, key: &str, n: u64) {
    let mut made = 0;
    for _ in 0..400 {
        let (s, _, r) = c.request("GET", &format!("/call/{}/x", api.slug), None, &[("x-api-key", key)], Vec::new()).await;
        match s {
            200 => made += 1,
            403 => tokio::time::sleep(Duration::from_millis(25)).await,
            other => panic!("{other} {r}"),
        }
        if made == n {
            break;
        }
    }
    assert_eq!(made, n);
    for _ in 0..100 {
        let (_, u) = c.get("/api/v1/usage", Some(token)).await;
        let counted: u64 = u["subscriptions"].as_array().unwrap().iter().map(|s| s["calls"].as_u64().unwrap()).sum();
        if counted >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the calls were never counted");
}

async fn statement(c: &TestCluster, token: &str, month: &str) -> Value {
    let (s, st) = c.get(&format!("/api/v1/usage/statement?month={month}"), Some(token)).await;
    assert_eq!(s, 200, "{st}");
    st
}

/// (plan, calls, cost, currency) of each line.
fn lines(st: &Value) -> Vec<(String, u64, u64, String)> {
    st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let text = |f: &str| l[f].as_str().unwrap().to_owned();
            (text("plan"), l["calls"].as_u64().unwrap(), l["cost_minor"].as_u64().unwrap(), text("currency"))
        })
        .collect()
}

fn line(plan: &str, calls: u64, cost: u64, currency: &str) -> (String, u64, u64, String) {
    (plan.into(), calls, cost, currency.into())
}

/// Moves the control plane's clock to `before` the end of this month; returns this month.
fn to_month_end(c: &TestCluster, before: Duration) -> Month {
    let month = Month::of(c.clock.now());
    let gap = (month.end() - c.clock.now()).to_std().unwrap();
    if gap > before {
        c.clock.advance(gap - before);
    }
    assert_eq!(Month::of(c.clock.now()), month);
    month
}

#[tokio::test]
async fn a_downgrade_on_the_31st_waits_for_next_month_and_leaves_past_statements_alone() {
    let c = TestCluster::builder().start().await;
    let (_provider, api) = published(&c).await;
    let (token, key) = c.consumer().await;
    subscribe(&c, &token, &api, "pro").await;
    calls(&c, &token, &api, &key, 3).await;

    // The last day of the month: switching to free is a downgrade, which waits.
    let month = to_month_end(&c, Duration::from_secs(3 * 3600));
    let sub = subscribe(&c, &token, &api, "free").await;
    assert_eq!(sub["plan"]["name"], "pro", "{sub}");
    assert_eq!(sub["pending_plan"]["name"], "free", "{sub}");
    let next = month.next();
    assert_eq!(sub["plan_changes_at"], format!("{next}-01T00:00:00Z"), "{sub}");
    // Asked again: it is already pending.
    let (s, r) = c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(&token), json!({"plan": "free"})).await;
    assert_eq!(s, 409, "{r}");
    let (_, u) = c.get("/api/v1/usage", Some(&token)).await;
    assert_eq!(u["subscriptions"][0]["cost_minor"], 4999, "{u}");
    assert_eq!(u["subscriptions"][0]["subscription"]["pending_plan"]["name"], "free", "{u}");
    let this = statement(&c, &token, &month.to_string()).await;
    assert_eq!(lines(&this), [line("pro", 3, 4999, "SAR")], "{this}");
    assert_eq!(this["totals"], json!([{"currency": "SAR", "amount_minor": 4999}]));

    // The next month: free is in force, and the month that was pro still bills pro.
    c.clock.advance(Duration::from_secs(4 * 3600));
    assert_eq!(Month::of(c.clock.now()), next);
    let past = statement(&c, &token, &month.to_string()).await;
    assert_eq!(lines(&past), [line("pro", 3, 4999, "SAR")], "{past}");
    assert_eq!(past["lines"][0]["ends_at"], format!("{next}-01T00:00:00Z"), "{past}");
    let now = statement(&c, &token, "").await;
    assert_eq!(lines(&now), [line("free", 0, 0, "USD")], "{now}");
    let (_, u) = c.get("/api/v1/usage", Some(&token)).await;
    let held = &u["subscriptions"][0];
    assert_eq!((held["subscription"]["plan"]["name"].as_str(), held["cost_minor"].as_u64()), (Some("free"), Some(0)), "{u}");
    assert!(held["subscription"]["pending_plan"].is_null(), "{u}");
    c.stop().await;
}

#[tokio::test]
async fn an_upgrade_applies_and_bills_at_once() {
    let c = TestCluster::builder().start().await;
    let (_provider, api) = published(&c).await;
    let (token, key) = c.consumer().await;
    let sub = subscribe(&c, &token, &api, "").await;
    assert_eq!(sub["plan"]["name"], "free");
    calls(&c, &token, &api, &key, 2).await;
    let month = to_month_end(&c, Duration::from_secs(2 * 3600));
    let sub = subscribe(&c, &token, &api, "pro").await;
    assert_eq!(sub["plan"]["name"], "pro", "{sub}");
    assert!(sub["pending_plan"].is_null() && sub["plan_changes_at"].is_null(), "{sub}");
    let st = statement(&c, &token, &month.to_string()).await;
    assert_eq!(lines(&st), [line("free", 2, 0, "USD"), line("pro", 0, 4999, "SAR")], "{st}");
    assert_eq!(st["lines"][0]["ends_at"], st["lines"][1]["starts_at"], "{st}");
    assert_eq!(st["totals"], json!([{"currency": "SAR", "amount_minor": 4999}, {"currency": "USD", "amount_minor": 0}]));
    // The edge already holds the dearer plan's limits.
    let (s, h, r) = c.request("GET", &format!("/call/{}/x", api.slug), None, &[("x-api-key", &key)], Vec::new()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(h["ratelimit-limit"], "600");
    c.stop().await;
}

#[tokio::test]
async fn deleting_an_api_keeps_its_consumers_past_statement_lines() {
    let c = TestCluster::builder().start().await;
    let (provider, api) = published(&c).await;
    let (token, key) = c.consumer().await;
    subscribe(&c, &token, &api, "pro").await;
    calls(&c, &token, &api, &key, 2).await;
    let month = to_month_end(&c, Duration::from_secs(3 * 3600));

    let (s, r) = c.delete(&format!("/api/v1/apis/{}", api.id), Some(&provider)).await;
    assert_eq!(s, 200, "{r}");
    let (_, u) = c.get("/api/v1/usage", Some(&token)).await;
    assert_eq!(u["subscriptions"].as_array().unwrap().len(), 0, "{u}");
    let (_, m) = c.get("/api/v1/marketplace?q=gold", None).await;
    assert_eq!(m["apis"].as_array().unwrap().len(), 0, "gone from the catalogue: {m}");
    let st = statement(&c, &token, &month.to_string()).await;
    assert_eq!(lines(&st), [line("pro", 2, 4999, "SAR")], "{st}");
    assert_eq!((st["lines"][0]["slug"].as_str(), st["lines"][0]["api_id"].as_str()), (Some(api.slug.as_str()), Some(api.id.as_str())));

    // The slug is free again; a new API there is another API, and the old lines keep
    // naming the deleted one.
    let again = c.create_api(&provider, "Gold Prices", "python", HELLO).await;
    assert_eq!(again.slug, api.slug);
    assert_ne!(again.id, api.id);

    // Nothing is billed after the deletion; the past month still is.
    c.clock.advance(Duration::from_secs(4 * 3600));
    assert!(lines(&statement(&c, &token, "").await).is_empty());
    let past = statement(&c, &token, &month.to_string()).await;
    assert_eq!(lines(&past), [line("pro", 2, 4999, "SAR")], "{past}");
    assert_eq!(past["lines"][0]["api_id"], api.id.as_str());
    c.stop().await;
}
