//! The data path with API keys, grants, limits and metering, and the marketplace routes'
//! answers to bad input, through the whole router (see `router_tests` for the set-up:
//! `pub` is u2's public API, `priv` u2's private one, `mine` u1's).
use axum::{
    body::Body,
    http::{HeaderMap, Request, StatusCode},
};
use serde_json::Value;
use souq_proto::metering::{AccessTable, Grant, KeyEntry, UsageEvent};

use crate::{
    AppState,
    access::credential::key_hash,
    meter::Store,
    rest::router_tests::{app, app_with, get, problem, send, token},
};

const K3: &str = "souq_abcdefgh_u3u3u3u3u3u3u3u3u3u3u3u3u3u3u3u3";
const K4: &str = "souq_abcdefgh_u4u4u4u4u4u4u4u4u4u4u4u4u4u4u4u4";

fn grant(user: &str, api: &str, per_minute: u32, quota: u64) -> Grant {
    Grant {
        subscription_id: format!("sub-{user}-{api}"),
        user_id: user.into(),
        api_id: api.into(),
        plan_id: "plan".into(),
        rate_limit_per_minute: per_minute,
        monthly_quota: quota,
        used_this_month: 0,
        month: "2000-01".into(),
    }
}

fn install(state: &AppState, generation: u64, keys: &[(&str, &str)], grants: Vec<Grant>) {
    let keys = keys
        .iter()
        .map(|(k, user)| KeyEntry {
            sha256: key_hash(k).to_vec(),
            key_id: format!("key-{user}"),
            user_id: (*user).into(),
        })
        .collect();
    state.access.install(AccessTable { generation, keys, grants });
}

fn with_key(uri: &str, key: &str) -> Request<Body> {
    Request::get(uri).header("x-api-key", key).body(Body::empty()).expect("request")
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The edge's count of refusals for `reason`.
fn refusals(state: &AppState, reason: &'static str) -> u64 {
    state.metrics.refusals.get_or_create(&crate::metrics::ReasonLabel { reason }).get()
}

fn metered(state: &AppState) -> Vec<UsageEvent> {
    match &state.meter.shared().expect("metering on").store {
        Store::Memory(q) => q.read(1000),
        Store::Redis(..) => panic!("memory expected"),
    }
}

#[tokio::test]
async fn subscribers_call_with_keys_under_their_plans_limits() {
    let (app, state) = app(1024).await;
    // Before any access table, a key cannot be told from a forgery: 503, not 401.
    assert_eq!(send(&app, with_key("/call/pub/x", K3)).await.0, StatusCode::SERVICE_UNAVAILABLE);
    install(&state, 1, &[(K3, "u3"), (K4, "u4")], vec![grant("u3", "api-pub", 2, 100)]);

    // Two a minute: a burst of two, with the RateLimit headers, then a 429.
    for remaining in ["1", "0"] {
        let (s, h, _) = send(&app, with_key("/call/pub/x", K3)).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(header(&h, "ratelimit-limit"), Some("2"));
        assert_eq!(header(&h, "ratelimit-remaining"), Some(remaining));
        assert_eq!(header(&h, "ratelimit-reset").map(|r| r.parse::<u64>().is_ok()), Some(true));
    }
    let (s, h, b) = send(&app, with_key("/call/pub/x", K3)).await;
    assert_eq!(
        (s, problem(&b)["type"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("urn:souq:problem:rate-limited"))
    );
    let retry: u64 = header(&h, "retry-after").and_then(|r| r.parse().ok()).expect("retry-after");
    assert!((29..=30).contains(&retry), "{retry}");
    assert_eq!(header(&h, "ratelimit-remaining"), Some("0"));
    assert_eq!(refusals(&state, "rate_limit"), 1, "the refusal is counted");

    // The key never reaches the handler; the event names the key and the subscription.
    let events = metered(&state);
    assert_eq!(events.len(), 2, "the 429 is not metered");
    let e = &events[0];
    assert_eq!(
        (
            e.api_id.as_str(),
            e.user_id.as_str(),
            e.key_id.as_str(),
            e.subscription_id.as_str(),
            e.status,
            e.kind.as_str()
        ),
        ("api-pub", "u3", "key-u3", "sub-u3-api-pub", 200, "call")
    );
    assert!(e.bytes_out > 0 && e.ts_ms > 0);

    // No subscription: 403. Someone else's private API: 404, as if it did not exist.
    let (s, _, b) = send(&app, with_key("/call/pub/x", K4)).await;
    assert_eq!((s, problem(&b)["detail"].as_str()), (StatusCode::FORBIDDEN, Some("subscribe to this API first")));
    assert_eq!(send(&app, with_key("/call/priv/x", K3)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, with_key("/call/nope", K3)).await.0, StatusCode::NOT_FOUND);

    // The owner calls without limits, and is metered without a subscription.
    let (s, h, _) = send(&app, get("/call/pub/x", Some(&token("u2")))).await;
    assert_eq!((s, h.get("ratelimit-limit")), (StatusCode::OK, None));
    let e = metered(&state).pop().expect("event");
    assert_eq!((e.user_id.as_str(), e.key_id.as_str(), e.subscription_id.as_str()), ("u2", "", ""));

    // A key in the URL is refused, even beside a good header; an unknown key is a 401.
    let leaked =
        Request::get(format!("/call/pub/x?api_key={K3}")).header("x-api-key", K3).body(Body::empty()).expect("req");
    let (s, _, b) = send(&app, leaked).await;
    assert_eq!((s, problem(&b)["type"].as_str()), (StatusCode::BAD_REQUEST, Some("urn:souq:problem:api-key-in-url")));
    assert_eq!(
        send(&app, with_key("/call/pub/x", "souq_abcdefgh_nobodynobodynobodynobody")).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Revoked: the next table no longer holds the key.
    install(&state, 2, &[(K4, "u4")], vec![grant("u3", "api-pub", 2, 100)]);
    assert_eq!(send(&app, with_key("/call/pub/x", K3)).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_monthly_quota_is_counted_and_a_call_that_ran_nowhere_is_refunded() {
    let (app, state) = app(1024).await;
    install(&state, 1, &[(K3, "u3")], vec![grant("u3", "api-pub", 1000, 2), grant("u3", "api-pubgone", 1000, 1)]);
    assert_eq!(send(&app, with_key("/call/pub/", K3)).await.0, StatusCode::OK);
    assert_eq!(send(&app, with_key("/call/pub/", K3)).await.0, StatusCode::OK);
    let (s, h, b) = send(&app, with_key("/call/pub/", K3)).await;
    assert_eq!(
        (s, problem(&b)["type"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("urn:souq:problem:quota-exceeded"))
    );
    assert!(header(&h, "retry-after").and_then(|r| r.parse::<u64>().ok()).is_some_and(|r| r >= 1));
    assert_eq!(metered(&state).len(), 2);
    assert_eq!((refusals(&state, "quota"), refusals(&state, "rate_limit")), (1, 0), "counted by reason");

    // No replica takes the call: 503, nothing metered, the quota given back (so the
    // single call of this plan is still there, twice over).
    for _ in 0..2 {
        assert_eq!(send(&app, with_key("/call/pubgone/", K3)).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(metered(&state).len(), 2);
}

#[tokio::test]
async fn with_metering_off_nothing_is_limited_or_metered() {
    let (app, state) = app_with(|cfg| cfg.metering = false).await;
    install(&state, 1, &[(K3, "u3")], vec![grant("u3", "api-pub", 1, 1)]);
    for _ in 0..3 {
        let (s, h, _) = send(&app, with_key("/call/pub/", K3)).await;
        assert_eq!((s, h.get("ratelimit-limit")), (StatusCode::OK, None));
    }
    assert!(state.meter.shared().is_none());
    // Access still holds: no subscription, no call.
    install(&state, 2, &[(K3, "u3")], vec![]);
    assert_eq!(send(&app, with_key("/call/pub/", K3)).await.0, StatusCode::FORBIDDEN);
}

fn json(method: &str, uri: &str, bearer: Option<&str>, body: &'static str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::from(body)).expect("request")
}

async fn field(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let (s, _, b) = send(app, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null)["field"].clone())
}

#[tokio::test]
async fn marketplace_routes_refuse_bad_input_before_the_control_plane() {
    let (app, _) = app(1024).await;
    let t = token("u1");
    let plans = "/api/v1/apis/0190a0e4-7c4e-7d2a-9a57-5b3c8f1e2d40/plans";
    for (body, want) in [
        (
            r#"{"name":"x","price_minor":1.5,"currency":"USD","monthly_quota":1,"rate_limit_per_minute":1}"#,
            "price_minor",
        ),
        (
            r#"{"name":"x","price_minor":-1,"currency":"USD","monthly_quota":1,"rate_limit_per_minute":1}"#,
            "price_minor",
        ),
        (
            r#"{"name":"x","price_minor":"100","currency":"USD","monthly_quota":1,"rate_limit_per_minute":1}"#,
            "price_minor",
        ),
        (
            r#"{"name":"x","price_minor":1e3,"currency":"USD","monthly_quota":1,"rate_limit_per_minute":1}"#,
            "price_minor",
        ),
        (r#"{"name":"x","price_minor":1,"currency":"EUR","monthly_quota":1,"rate_limit_per_minute":1}"#, "currency"),
        (r#"{"name":"x","price_minor":1,"currency":"USD","monthly_quota":1}"#, "rate_limit_per_minute"),
    ] {
        let (s, f) = field(&app, json("POST", plans, Some(&t), body)).await;
        assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(want)), "{body}");
    }
    let ok = r#"{"name":"x","price_minor":4999,"currency":"sar","monthly_quota":1,"rate_limit_per_minute":1}"#;
    assert_eq!(send(&app, json("POST", plans, Some(&t), ok)).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&app, json("POST", plans, None, ok)).await.0, StatusCode::UNAUTHORIZED);

    let api = "/api/v1/apis/0190a0e4-7c4e-7d2a-9a57-5b3c8f1e2d40";
    let (s, f) = field(&app, json("PATCH", api, Some(&t), r#"{"public":"yes"}"#)).await;
    assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("public")));
    let (s, f) = field(&app, json("PATCH", api, Some(&t), r#"{"owner":"me"}"#)).await;
    assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("owner")));
    assert_eq!(send(&app, json("PATCH", api, Some(&t), r#"{"public":true}"#)).await.0, StatusCode::SERVICE_UNAVAILABLE);

    // The marketplace needs no token; its paging is checked.
    let (s, f) = field(&app, get("/api/v1/marketplace?per_page=0", None)).await;
    assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("per_page")));
    assert_eq!(send(&app, get("/api/v1/marketplace?q=gold", None)).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let sub = "/api/v1/marketplace/gold-prices/subscribe";
    assert_eq!(send(&app, json("POST", sub, Some(&t), "")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (s, f) = field(&app, json("POST", sub, Some(&t), r#"{"plan":5}"#)).await;
    assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("plan")));

    // Keys, usage, statements.
    assert_eq!(send(&app, json("DELETE", "/api/v1/keys/not-a-uuid", Some(&t), "")).await.0, StatusCode::NOT_FOUND);
    let (s, f) = field(&app, json("POST", "/api/v1/keys", Some(&t), "{}")).await;
    assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("name")));
    let (s, f) = field(&app, get(&format!("{api}/usage?hours=0"), Some(&t))).await;
    assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("hours")));
    let (s, f) = field(&app, get("/api/v1/usage/statement?month=2025-13", Some(&t))).await;
    assert_eq!((s, f.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("month")));
    assert_eq!(send(&app, get("/api/v1/usage", None)).await.0, StatusCode::UNAUTHORIZED);
}
