//! `GET /metrics` through the whole router: the exposition after requests (by route
//! template, never the raw path), the 404 without one, and refusals counted.
use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use souq_proto::metrics::{CONTENT_TYPE, Registry};

use crate::{
    metrics::Metrics,
    rest::router_tests::{app, app_with, get, problem, send, token},
};

/// The app with its metrics registered and exposed.
async fn exposed() -> (axum::Router, crate::AppState) {
    app_with(|cfg| {
        let mut registry = Registry::default();
        cfg.metrics = Arc::new(Metrics::register(&mut registry));
        cfg.exposition = Some(Arc::new(registry));
    })
    .await
}

async fn scrape(app: &axum::Router) -> String {
    let (s, h, b) = send(app, get("/metrics", None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get("content-type").and_then(|v| v.to_str().ok()), Some(CONTENT_TYPE));
    String::from_utf8(b).expect("text")
}

#[tokio::test]
async fn requests_are_counted_by_route_template_not_by_path() {
    let (app, _) = exposed().await;
    let u1 = token("u1");
    assert_eq!(send(&app, get("/call/mine/some/where", Some(&u1))).await.0, StatusCode::OK);
    assert_eq!(send(&app, get("/call/nope/x", Some(&u1))).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, get("/no/such/route", None)).await.0, StatusCode::NOT_FOUND);
    let text = scrape(&app).await;
    // The call that ran is metered; with no flusher in this test, its event waits.
    for line in [
        r#"souq_edge_http_requests_total{route="/call/{slug}/{*path}",method="GET",status_class="2xx"} 1"#,
        r#"souq_edge_http_requests_total{route="/call/{slug}/{*path}",method="GET",status_class="4xx"} 1"#,
        r#"souq_edge_http_requests_total{route="unmatched",method="GET",status_class="4xx"} 1"#,
        r#"souq_edge_http_request_duration_seconds_count{route="/call/{slug}/{*path}",method="GET"} 2"#,
        r#"souq_edge_api_calls_total{api="mine",status_class="2xx"} 1"#,
        r#"souq_edge_api_calls_total{api="unknown",status_class="4xx"} 1"#,
        r#"souq_edge_api_call_duration_seconds_count{api="mine"} 1"#,
        "# TYPE souq_edge_route_table_age_seconds gauge",
        "# TYPE souq_edge_access_table_age_seconds gauge",
        "souq_edge_metering_backlog 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    for raw in ["/call/mine/some/where", "/no/such/route", "nope"] {
        assert!(!text.contains(raw), "{raw} is a raw path");
    }
    // The scrape itself is counted, under its own route, by the next scrape.
    assert!(scrape(&app).await.contains(r#"route="/metrics",method="GET",status_class="2xx"} 1"#));
}

#[tokio::test]
async fn without_an_exposition_metrics_is_not_found() {
    let (app, _) = app(1024).await;
    let (s, h, b) = send(&app, get("/metrics", None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(h.get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    assert_eq!(problem(&b)["type"], "urn:souq:problem:not-found");
    assert!(crate::rest::document().paths.paths.keys().all(|p| p != "/metrics"), "not in the public document");
}

#[tokio::test]
async fn refusals_are_exposed_by_reason() {
    let (app, _) = app_with(|cfg| {
        let mut registry = Registry::default();
        cfg.metrics = Arc::new(Metrics::register(&mut registry));
        cfg.exposition = Some(Arc::new(registry));
        cfg.call_body_limit = 8;
    })
    .await;
    let req = Request::post("/call/mine/x")
        .header("authorization", format!("Bearer {}", token("u1")))
        .body(Body::from("more than eight bytes"))
        .expect("request");
    assert_eq!(send(&app, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let text = scrape(&app).await;
    assert!(text.contains(r#"souq_edge_refusals_total{reason="body_too_large"} 1"#), "{text}");
    assert!(text.contains(r#"souq_edge_api_calls_total{api="mine",status_class="4xx"} 1"#), "{text}");
}

#[tokio::test]
async fn a_problem_has_a_trace_id_when_nothing_traces() {
    let (app, _) = app(1024).await;
    let (_, _, b) = send(&app, get("/no/such/route", None)).await;
    let p = problem(&b);
    assert_eq!(p["status"], 404);
    let id = p["trace_id"].as_str().unwrap_or_default();
    assert!(id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')), "{p}");
    // The document names it, optional.
    let doc = serde_json::to_value(crate::rest::document()).expect("json");
    let schema = &doc["components"]["schemas"]["Problem"];
    assert_eq!(schema["properties"]["trace_id"]["pattern"], "^[0-9a-f]{32}$", "{schema}");
    assert!(schema["required"].as_array().is_some_and(|r| !r.iter().any(|f| f == "trace_id")), "{schema}");
}
