//! Bad input gets a clear problem+json answer with the right status, never a 500.
use serde_json::json;
use souq_tests::TestCluster;

#[tokio::test]
async fn execute_rejects_bad_requests() {
    let c = TestCluster::builder().max_timeout_ms(20_000).start().await;
    let t = c.user().await;

    let (s, p) = c.execute(&t, json!({"runtime": "ruby", "code": "puts 1"})).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["field"], "runtime");
    assert!(p["detail"].as_str().unwrap().contains("python, nodejs (or node), go"), "{p}");

    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "  "})).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("code")), "{p}");

    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "print(1)", "timeout_ms": 20_001})).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("timeout_ms")), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("20000"), "{p}");

    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "print(1)", "timeout_ms": -5})).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("timeout_ms")), "{p}");

    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "x".repeat(300 * 1024)})).await;
    assert_eq!(s, 413, "{p}");
    assert_eq!(p["type"], "urn:souq:problem:payload-too-large");

    let url = format!("{}/api/v1/execute", c.url);
    let resp = c.http.post(&url).bearer_auth(&t).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    let resp = c.http.post(&url).bearer_auth(&t).header("content-type", "text/plain").body("print(1)").send().await.unwrap();
    assert_eq!(resp.status(), 415);

    // Unauthenticated requests are refused before anything runs.
    let (s, _) = c.execute("bad-token", json!({"runtime": "python", "code": "print(1)"})).await;
    assert_eq!(s, 401);
    c.stop().await;
}

#[tokio::test]
async fn every_answer_has_a_request_id_and_errors_are_problems() {
    let c = TestCluster::builder().agents(0).start().await;
    for (method, path, status) in [("GET", "/healthz", 200), ("GET", "/nope", 404), ("DELETE", "/api/v1/auth/login", 405), ("GET", "/api/v1/auth/me", 401)] {
        let resp = c.http.request(method.parse().unwrap(), format!("{}{path}", c.url)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{method} {path}");
        assert!(resp.headers().contains_key("x-request-id"), "{method} {path}");
        if status >= 400 {
            assert_eq!(resp.headers()["content-type"], "application/problem+json", "{method} {path}");
        }
    }
    // A client's own request id is kept.
    let resp = c.http.get(format!("{}/healthz", c.url)).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    c.stop().await;
}

#[tokio::test]
async fn openapi_document_is_served() {
    let c = TestCluster::builder().agents(0).start().await;
    let (s, doc) = c.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    for path in ["/api/v1/auth/signup", "/api/v1/auth/login", "/api/v1/auth/me", "/api/v1/execute"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    c.stop().await;
}
