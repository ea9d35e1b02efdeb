//! The REST contract does not shrink: every path, method, response status and schema
//! property of the v1 baseline (`openapi-v1-baseline.json`, the document as it was
//! before the edge's routes and document became one list) is still in the document, and
//! everything the document lists is served. Additions are allowed.
use std::collections::BTreeSet;

use axum::{
    body::{Body, to_bytes},
    http::{Method, Request, StatusCode},
};
use serde_json::Value;
use souq_edge_proxy::{AppState, Config, rest, router};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const BASELINE: &str = include_str!("openapi-v1-baseline.json");
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn current() -> Value {
    serde_json::to_value(rest::document()).expect("the document is JSON")
}

fn baseline() -> Value {
    serde_json::from_str(BASELINE).expect("the baseline is JSON")
}

/// Every `(path, method)` of a document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            ops.push((path.clone(), (*method).to_owned()));
        }
    }
    ops
}

/// The property names of a schema, through `allOf`, `oneOf` and `anyOf`.
fn properties(schema: &Value, out: &mut BTreeSet<String>) {
    if let Some(props) = schema["properties"].as_object() {
        out.extend(props.keys().cloned());
    }
    for combinator in ["allOf", "oneOf", "anyOf"] {
        for part in schema[combinator].as_array().into_iter().flatten() {
            properties(part, out);
        }
    }
}

/// What of `baseline` is missing from `doc`, one line each.
fn missing(baseline: &Value, doc: &Value) -> Vec<String> {
    let mut gone = Vec::new();
    for (path, method) in operations(baseline) {
        let Some(op) = doc["paths"][&path].get(&method) else {
            gone.push(format!("{} {path}: the operation", method.to_uppercase()));
            continue;
        };
        for status in baseline["paths"][&path][&method]["responses"].as_object().into_iter().flatten().map(|(s, _)| s) {
            if op["responses"].get(status).is_none() {
                gone.push(format!("{} {path}: response {status}", method.to_uppercase()));
            }
        }
    }
    for (name, schema) in baseline["components"]["schemas"].as_object().into_iter().flatten() {
        let Some(now) = doc["components"]["schemas"].get(name) else {
            gone.push(format!("schema {name}"));
            continue;
        };
        let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
        properties(schema, &mut before);
        properties(now, &mut after);
        gone.extend(before.difference(&after).map(|p| format!("schema {name}: property {p}")));
    }
    gone
}

#[test]
fn every_path_method_status_and_property_of_the_baseline_is_still_documented() {
    let (baseline, doc) = (baseline(), current());
    assert!(operations(&baseline).len() >= 31, "the baseline holds the v1 contract");
    let gone = missing(&baseline, &doc);
    assert!(gone.is_empty(), "the REST contract lost:\n{}", gone.join("\n"));
}

#[test]
fn the_check_fails_when_a_route_is_dropped() {
    let baseline = baseline();
    let mut doc = current();
    doc["paths"]["/api/v1/keys/{id}"].as_object_mut().expect("path").remove("delete");
    doc["paths"].as_object_mut().expect("paths").remove("/api/v1/usage");
    doc["paths"]["/api/v1/apis"]["post"]["responses"].as_object_mut().expect("responses").remove("409");
    doc["components"]["schemas"]["PlanBody"]["properties"].as_object_mut().expect("props").remove("currency");
    let gone = missing(&baseline, &doc);
    for expected in [
        "DELETE /api/v1/keys/{id}: the operation",
        "GET /api/v1/usage: the operation",
        "POST /api/v1/apis: response 409",
        "schema PlanBody: property currency",
    ] {
        assert!(gone.iter().any(|g| g == expected), "{expected} not caught: {gone:?}");
    }
}

#[test]
fn errors_are_documented_as_problem_json() {
    let doc = current();
    let op = &doc["paths"]["/api/v1/apis/{id}"]["get"];
    for status in ["401", "404"] {
        let schema = &op["responses"][status]["content"]["application/problem+json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/Problem", "{status}");
    }
}

/// Sends `method path` with no credentials to a router whose control plane is an
/// unreachable address.
async fn send(method: &str, path: &str) -> (StatusCode, Value) {
    let cfg = Config::new("http://127.0.0.1:1".into(), "join-token-0123456789".into());
    let state = AppState::new(&cfg, CancellationToken::new()).expect("state");
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let req = Request::builder().method(method).uri(path).body(Body::empty()).expect("request");
    let resp = router(state).oneshot(req).await.expect("response");
    let status = resp.status();
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_edge_serves_this_document_and_every_route_in_it() {
    let (status, served) = send("get", "/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, current(), "the served document is the contract's");
    for (path, method) in operations(&served) {
        let concrete = path
            .replace("{id}", "0190a0e4-7c4e-7d2a-9a57-5b3c8f1e2d40")
            .replace("{slug}", "some-api")
            .replace("{token}", "t")
            .replace("{path}", "a/b");
        let (status, body) = send(&method, &concrete).await;
        let unrouted = status == StatusCode::METHOD_NOT_ALLOWED || body["detail"] == "no such route";
        assert!(!unrouted, "{} {path} is documented but not served: {status} {body}", method.to_uppercase());
    }
}
