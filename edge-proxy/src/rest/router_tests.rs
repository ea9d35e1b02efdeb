//! Tests of the whole router with `oneshot`: the data path against a fake agent on a
//! real port, and the management routes' answers to bad input (the control plane is an
//! unreachable address, so anything that gets past the edge's own checks is a 503).
use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use souq_proto::{
    Claims, Kind, WireError,
    agent::ResultKind,
    routes::{Backend, Route, RouteTable},
};
use souq_test_support::{Behaviour, FakeAgent};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tower::ServiceExt;

use crate::{AppState, Config, router, verifier::Verifier};

pub(super) const SECRET: &[u8] = b"test-signing-secret";
const JOIN: &str = "test-join-token-0123456789";

/// A fake agent that answers by instance id: `echo` returns the event, `gone` is
/// NOT_FOUND, `boom` raises, `late` is a timeout, `proxy` returns the Lambda shape, `hang`
/// never answers in time.
async fn start_agent() -> String {
    let agent = FakeAgent::new(|req| match req.instance_id.as_str() {
        "echo" => Behaviour::Echo,
        "gone" => Behaviour::Fail(WireError::new(Kind::NotFound, "no such instance").into()),
        "boom" => Behaviour::Answer(ResultKind::Error, b"ValueError: boom".to_vec()),
        "late" => Behaviour::Fail(WireError::new(Kind::Timeout, "the handler took too long").into()),
        "proxy" => Behaviour::Answer(
            ResultKind::Json,
            br#"{"statusCode":201,"headers":{"x-made":"yes"},"body":"made"}"#.to_vec(),
        ),
        "hang" => Behaviour::Sleep(Duration::from_secs(30), Box::new(Behaviour::Answer(ResultKind::Text, Vec::new()))),
        _ => Behaviour::Fail(Status::internal("unexpected instance")),
    })
    .expecting_join_token(JOIN);
    // The server runs until the test's runtime ends.
    agent.serve().await.url()
}

fn route(slug: &str, owner: &str, public: bool, timeout_ms: u64, agent: &str, instances: &[&str]) -> Route {
    Route {
        slug: slug.into(),
        api_id: format!("api-{slug}"),
        owner_id: owner.into(),
        public,
        timeout_ms,
        backends: instances
            .iter()
            .map(|i| Backend { instance_id: (*i).into(), agent_addr: agent.into(), node: "n1".into(), version: 1 })
            .collect(),
    }
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn token(sub: &str) -> String {
    let claims = Claims {
        iss: "souq".into(),
        aud: "souq-api".into(),
        sub: sub.into(),
        iat: now() - 10,
        exp: now() + 600,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).expect("sign")
}

pub(super) async fn app(call_body_limit: usize) -> (Router, AppState) {
    app_with(|cfg| cfg.call_body_limit = call_body_limit).await
}

/// The app around a config that `adjust` changes.
pub(super) async fn app_with(adjust: impl FnOnce(&mut Config)) -> (Router, AppState) {
    let agent = start_agent().await;
    let mut cfg = Config::new("http://127.0.0.1:1".into(), JOIN.into());
    adjust(&mut cfg);
    let mut state = AppState::new(&cfg, CancellationToken::new()).expect("state");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["souq"]);
    validation.set_audience(&["souq-api"]);
    state.verifier = Arc::new(Verifier::with_key(DecodingKey::from_secret(SECRET), validation));
    state.routes.install(RouteTable {
        generation: 1,
        routes: vec![
            route("mine", "u1", false, 1000, &agent, &["gone", "echo"]),
            route("pub", "u2", true, 1000, &agent, &["echo"]),
            route("pubgone", "u2", true, 1000, &agent, &["gone"]),
            route("priv", "u2", false, 1000, &agent, &["echo"]),
            route("idle", "u1", false, 1000, &agent, &[]),
            route("boom", "u1", false, 1000, &agent, &["boom"]),
            route("late", "u1", false, 1000, &agent, &["late"]),
            route("proxy", "u1", false, 1000, &agent, &["proxy"]),
            route("hang", "u1", false, 10, &agent, &["hang"]),
        ],
    });
    (router(state.clone()), state)
}

pub(super) async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, to_bytes(body, usize::MAX).await.expect("body").to_vec())
}

pub(super) fn get(uri: &str, bearer: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Body::empty()).expect("request")
}

pub(super) fn problem(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("problem json")
}

#[tokio::test]
async fn who_may_call() {
    let (app, _) = app(1024).await;
    let u1 = token("u1");
    for uri in ["/call/mine/x", "/call/nope"] {
        let (s, h, _) = send(&app, get(uri, None)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(h.get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"));
    }
    let req = Request::get("/call/mine").header("x-api-key", "sk_123").body(Body::empty()).expect("req");
    let (s, _, b) = send(&app, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(problem(&b)["detail"], "invalid or revoked API key");
    let (s, _, _) = send(&app, get("/call/mine", Some("not.a.token"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, b) = send(&app, get("/call/nope", Some(&u1))).await;
    assert_eq!((s, problem(&b)["type"].as_str()), (StatusCode::NOT_FOUND, Some("urn:souq:problem:not-found")));
    let (s, _, _) = send(&app, get("/call/priv/x", Some(&u1))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, b) = send(&app, get("/call/pub/x", Some(&u1))).await;
    assert_eq!((s, problem(&b)["type"].as_str()), (StatusCode::FORBIDDEN, Some("urn:souq:problem:forbidden")));
    assert_eq!(problem(&b)["detail"], "subscribe to this API first");
    let (s, h, _) = send(&app, get("/call/idle", Some(&u1))).await;
    assert_eq!((s, h.get("retry-after").and_then(|v| v.to_str().ok())), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));
}

#[tokio::test]
async fn the_handler_gets_the_event_and_a_missing_replica_is_skipped() {
    let (app, _) = app(1024).await;
    let u1 = token("u1");
    // `mine` has a replica that answers NOT_FOUND; whichever the round-robin picks first,
    // every call lands on the one that works.
    for _ in 0..4 {
        let req = Request::post("/call/mine/a/b?x=1&x=2&y=%20")
            .header("authorization", format!("Bearer {u1}"))
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-custom", "v")
            .header("content-type", "application/octet-stream")
            .body(Body::from(vec![0xffu8, 0, 1]))
            .expect("req");
        let (s, h, b) = send(&app, req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h.get("content-security-policy").and_then(|v| v.to_str().ok()), Some("sandbox"));
        let rid = h.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let e: Value = serde_json::from_slice(&b).expect("event");
        assert_eq!(e["method"], "POST");
        assert_eq!(e["path"], "/a/b");
        assert_eq!(e["query"], json!({"x": "2", "y": " "}));
        assert_eq!(e["rawQuery"], "x=1&x=2&y=%20");
        assert_eq!((e["body"].as_str(), e["isBase64Encoded"].as_bool()), (Some("/wAB"), Some(true)));
        assert_eq!(e["headers"]["x-custom"], "v");
        assert_eq!(e["headers"]["x-request-id"].as_str(), Some(rid.as_str()));
        for gone in ["authorization", "connection", "x-hop"] {
            assert!(e["headers"].get(gone).is_none(), "{gone}");
        }
    }
    for (uri, path) in [("/call/mine", "/"), ("/call/mine/", "/")] {
        let (s, _, b) = send(&app, get(uri, Some(&u1))).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
        assert_eq!(serde_json::from_slice::<Value>(&b).expect("event")["path"], path);
    }
}

#[tokio::test]
async fn answers_map_to_http() {
    let (app, _) = app(1024).await;
    let u1 = token("u1");
    let (s, h, b) = send(&app, get("/call/proxy", Some(&u1))).await;
    assert_eq!((s, b.as_slice()), (StatusCode::CREATED, b"made".as_slice()));
    assert_eq!(h.get("x-made").and_then(|v| v.to_str().ok()), Some("yes"));
    let (s, _, b) = send(&app, get("/call/boom", Some(&u1))).await;
    let p = problem(&b);
    assert_eq!(
        (s, p["type"].as_str(), p["detail"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("urn:souq:problem:handler-error"), Some("ValueError: boom"))
    );
    let (s, _, b) = send(&app, get("/call/late", Some(&u1))).await;
    assert_eq!((s, problem(&b)["type"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("urn:souq:problem:timeout")));
    let big = Request::post("/call/mine")
        .header("authorization", format!("Bearer {u1}"))
        .body(Body::from(vec![b'a'; 2000]))
        .expect("req");
    let (s, _, b) = send(&app, big).await;
    assert_eq!(
        (s, problem(&b)["type"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("urn:souq:problem:payload-too-large"))
    );
}

#[tokio::test]
async fn a_call_past_its_deadline_is_a_504() {
    let (app, _) = app(1024).await;
    let started = std::time::Instant::now();
    let (s, _, _) = send(&app, get("/call/hang", Some(&token("u1")))).await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_revocation_applies_to_a_cached_token() {
    let (app, state) = app(1024).await;
    let u1 = token("u1");
    assert_eq!(send(&app, get("/call/mine", Some(&u1))).await.0, StatusCode::OK);
    state.verifier.revoke("u1".into(), now() + 1);
    assert_eq!(send(&app, get("/call/mine", Some(&u1))).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn management_refuses_bad_input_before_the_control_plane() {
    let (app, _) = app(1024).await;
    let u1 = token("u1");
    assert_eq!(send(&app, get("/api/v1/apis/not-a-uuid", None)).await.0, StatusCode::UNAUTHORIZED);
    for uri in ["/api/v1/apis/not-a-uuid", "/api/v1/apis/1234/status", "/api/v1/apis/x/logs"] {
        let (s, _, b) = send(&app, get(uri, Some(&u1))).await;
        assert_eq!(
            (s, problem(&b)["type"].as_str()),
            (StatusCode::NOT_FOUND, Some("urn:souq:problem:not-found")),
            "{uri}"
        );
    }
    let id = "0190a0e4-7c4e-7d2a-9a57-5b3c8f1e2d40";
    let (s, _, b) = send(&app, get(&format!("/api/v1/apis/{id}/logs?tail=0"), Some(&u1))).await;
    assert_eq!((s, problem(&b)["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("tail")));

    let deploy = |ct: Option<&str>, body: &'static str| {
        let mut b = Request::post(format!("/api/v1/apis/{id}/deploy")).header("authorization", format!("Bearer {u1}"));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Body::from(body)).expect("req")
    };
    assert_eq!(send(&app, deploy(Some("text/plain"), "x")).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(send(&app, deploy(Some("application/json"), "{")).await.0, StatusCode::BAD_REQUEST);
    let (s, _, b) = send(&app, deploy(Some("application/json"), r#"{"replicas":"x"}"#)).await;
    assert_eq!((s, problem(&b)["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("replicas")));
    // An empty or absent body passes the edge (and meets the unreachable control plane).
    assert_eq!(send(&app, deploy(None, "")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&app, deploy(Some("application/json"), "")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&app, deploy(Some("application/json"), "{}")).await.0, StatusCode::SERVICE_UNAVAILABLE);

    let create = Request::post("/api/v1/apis")
        .header("authorization", format!("Bearer {u1}"))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"name":"n","runtime":"cobol","code":"x"}"#))
        .expect("req");
    let (s, _, b) = send(&app, create).await;
    assert_eq!((s, problem(&b)["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("runtime")));
}

#[tokio::test]
async fn every_route_is_documented() {
    let (app, _) = app(1024).await;
    let (s, _, b) = send(&app, get("/api/v1/openapi.json", None)).await;
    assert_eq!(s, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&b).expect("doc");
    for path in [
        "/api/v1/apis",
        "/api/v1/apis/{id}",
        "/api/v1/apis/{id}/code",
        "/api/v1/apis/{id}/versions",
        "/api/v1/apis/{id}/deploy",
        "/api/v1/apis/{id}/stop",
        "/api/v1/apis/{id}/status",
        "/api/v1/apis/{id}/logs",
        "/api/v1/apis/{id}/plans",
        "/api/v1/apis/{id}/usage",
        "/api/v1/keys",
        "/api/v1/keys/{id}",
        "/api/v1/marketplace",
        "/api/v1/marketplace/{slug}/subscribe",
        "/api/v1/usage",
        "/api/v1/usage/statement",
        "/call/{slug}/{path}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
}
