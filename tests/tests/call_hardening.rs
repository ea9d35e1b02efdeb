//! Calls that must not harm the shared edge origin or leak a key: a handler's response
//! headers pass only through the edge's allowlist, and an API key in the call's path is
//! refused before any handler (or its log) sees it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use souq_tests::{TestCluster, apis::Api};

/// Prints each call's path (so the API's logs show every call it ran), and answers
/// `/headers` with headers that act on the whole origin next to ordinary ones.
const HANDLER: &str = r#"
def handler(event):
    print("called " + event["path"], flush=True)
    if event["path"] == "/headers":
        return {"statusCode": 200, "headers": {
            "Clear-Site-Data": "\"*\"",
            "Strict-Transport-Security": "max-age=1",
            "Set-Cookie": "session=fixated; Path=/",
            "X-Custom": "kept",
            "Cache-Control": "no-store",
            "X-Request-Id": "forged",
            "X-RateLimit-Remaining": "999",
        }, "body": "with headers"}
    return {"path": event["path"]}
"#;

/// A 32-character secret, as in `souq_<prefix>_<secret>`.
const SECRET: &str = "0123456789abcdefghijklmnopqrstuv";

async fn setup(c: &TestCluster) -> (String, Api) {
    let token = c.user().await;
    let api = c.create_api(&token, "Hardened API", "python", HANDLER).await;
    c.deploy(&token, &api, json!({})).await;
    c.call_ok(&token, &api, "/warm").await;
    (token, api)
}

/// The API's log lines so far.
async fn log_lines(c: &TestCluster, token: &str, api: &Api) -> Vec<String> {
    let (s, logs) = c.get(&format!("/api/v1/apis/{}/logs?tail=500", api.id), Some(token)).await;
    assert_eq!(s, 200, "{logs}");
    logs["lines"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn only_allowlisted_handler_headers_reach_the_caller() {
    let c = TestCluster::builder().start().await;
    let (token, api) = setup(&c).await;

    let (s, h, r) = c.call(&token, &api, "GET", "/headers", &[], Vec::new()).await;
    assert_eq!((s, r), (200, Value::String("with headers".into())));
    // Per-response headers a handler legitimately sets arrive.
    assert_eq!(h["x-custom"], "kept", "{h:?}");
    assert_eq!(h["cache-control"], "no-store", "{h:?}");
    // Ones that act on the whole shared origin never do, nor forgeries of the edge's own.
    for gone in ["clear-site-data", "strict-transport-security", "set-cookie", "x-ratelimit-remaining"] {
        assert!(h.get(gone).is_none(), "{gone} reached the caller: {h:?}");
    }
    assert_ne!(h.get("x-request-id").and_then(|v| v.to_str().ok()), Some("forged"), "{h:?}");
    // And the edge's own protections stay.
    assert_eq!(h["content-security-policy"], "sandbox", "{h:?}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{h:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_key_in_the_path_is_refused_before_the_handler_runs() {
    let c = TestCluster::builder().start().await;
    let (token, api) = setup(&c).await;

    let key = format!("souq_abcd1234_{SECRET}");
    for path in [format!("/{key}"), format!("/users/{key}/orders"), format!("/{}", key.replace('_', "%5F"))] {
        let (s, h, r) = c.call(&token, &api, "GET", &path, &[], Vec::new()).await;
        assert_eq!(s, 400, "{path}: {r}");
        assert_eq!(h["content-type"], "application/problem+json", "{path}");
        assert!(r["type"].as_str().unwrap().ends_with("api-key-in-url"), "{path}: {r}");
        assert_eq!(r["status"], 400, "{r}");
    }
    // A path that merely mentions souq is served.
    let r = c.call_ok(&token, &api, "/souq_is_great").await;
    assert_eq!(r["path"], "/souq_is_great");

    // The handler ran for the calls around the refused ones, and never saw the key: once
    // the last call's line is in the logs, every earlier one would be too.
    let (s, _, r) = c.call(&token, &api, "GET", "/after", &[], Vec::new()).await;
    assert_eq!(s, 200, "{r}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = log_lines(&c, &token, &api).await;
        if lines.iter().any(|l| l.contains("called /after")) {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "the handler's lines never arrived: {lines:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(lines.iter().any(|l| l.contains("called /souq_is_great")), "{lines:?}");
    for l in &lines {
        assert!(!l.contains(SECRET) && !l.contains("souq_abcd1234") && !l.contains("souq%5F"), "the handler ran with the key: {l}");
    }
    c.stop().await;
}
