//! Deployed APIs on one agent: versions, deploy, call, the event and the answer shapes,
//! bad input, load errors, crashes, timeouts, logs, stop and delete.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use souq_tests::{TestCluster, apis::Api};

/// Answers with what it was given, or in the shape the path asks for.
const ECHO: &str = r#"
import os, sys
def handler(event):
    p = event["path"]
    if p == "/shaped":
        return {"statusCode": 201, "headers": {"x-made-by": "souq", "content-type": "text/plain"}, "body": "created"}
    if p == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"}, "body": "AAEC/w==", "isBase64Encoded": True}
    if p == "/text":
        return object.__new__(type("Thing", (), {"__str__": lambda self: "a thing"}))
    if p == "/raise":
        raise ValueError("bad input: no " + "cheese")
    if p == "/print":
        print("hello from the handler", flush=True)
        print("and from stderr", file=sys.stderr, flush=True)
        return "printed"
    if p == "/crash":
        os._exit(3)
    if p == "/sleep":
        import time
        time.sleep(30)
    return {"event": event, "host": os.uname().nodename}
"#;

async fn setup(c: &TestCluster) -> (String, Api) {
    let token = c.user().await;
    let api = c.create_api(&token, "Echo API", "python", ECHO).await;
    c.deploy(&token, &api, json!({})).await;
    c.call_ok(&token, &api, "/").await;
    (token, api)
}

#[tokio::test]
async fn an_api_is_versioned_deployed_and_called() {
    let c = TestCluster::builder().start().await;
    let token = c.user().await;
    let api = c.create_api(&token, "Echo API", "python", ECHO).await;
    assert!(api.slug.starts_with("echo-api"), "{}", api.slug);

    // Versions: immutable, numbered, hashed.
    let (s, v2) = c.put(&format!("/api/v1/apis/{}/code", api.id), Some(&token), json!({"code": ECHO.replace("souq", "souq!")})).await;
    assert_eq!(s, 200, "{v2}");
    assert_eq!(v2["version"], 2);
    let (s, list) = c.get(&format!("/api/v1/apis/{}/versions", api.id), Some(&token)).await;
    assert_eq!(s, 200, "{list}");
    let versions = list["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_ne!(versions[0]["code_sha256"], versions[1]["code_sha256"]);
    let (s, mine) = c.get("/api/v1/apis", Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(mine["apis"][0]["slug"], api.slug.as_str());
    assert_eq!(mine["apis"][0]["latest_version"], 2);

    let st = c.deploy(&token, &api, json!({"version": 1})).await;
    assert_eq!(st["version"], 1, "{st}");
    assert_eq!(st["replicas"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["replicas"][0]["node"], c.nodes[0].as_str(), "{st}");
    assert_eq!(st["replicas"][0]["state"], "running", "{st}");
    c.call_ok(&token, &api, "/").await;

    // The event: method, path, query, headers without auth or hop-by-hop ones, body.
    let (s, _, r) = c
        .call(&token, &api, "POST", "/orders/7?size=large&size=small&x=%D8%B0%D9%87%D8%A8", &[("x-custom", "yes"), ("connection", "keep-alive, x-drop"), ("x-drop", "1"), ("content-type", "application/json")], br#"{"n":1}"#.to_vec())
        .await;
    assert_eq!(s, 200, "{r}");
    let e = &r["event"];
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/orders/7");
    assert_eq!(e["query"]["x"], "ذهب");
    assert_eq!(e["body"], r#"{"n":1}"#);
    assert_eq!(e["isBase64Encoded"], false);
    assert_eq!(e["headers"]["x-custom"], "yes");
    for gone in ["authorization", "connection", "x-drop", "x-api-key"] {
        assert!(e["headers"].get(gone).is_none(), "{gone} reached the handler: {e}");
    }

    // Binary bodies arrive intact, base64-encoded with the flag.
    let bytes = vec![0u8, 159, 146, 150, 255, b'\n'];
    let (s, _, r) = c.call(&token, &api, "PUT", "/bin", &[("content-type", "application/octet-stream")], bytes.clone()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["event"]["isBase64Encoded"], true);
    let got = base64::engine::general_purpose::STANDARD.decode(r["event"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(got, bytes);

    // The Lambda shape sets status, headers and body.
    let (s, h, r) = c.call(&token, &api, "GET", "/shaped", &[], Vec::new()).await;
    assert_eq!((s, r), (201, Value::String("created".into())));
    assert_eq!(h["x-made-by"], "souq");
    let resp = c.http.get(format!("{}/call/{}/binary", c.url, api.slug)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), [0u8, 1, 2, 255]);
    // Not JSON-serialisable: passed through as text.
    let (s, h, r) = c.call(&token, &api, "GET", "/text", &[], Vec::new()).await;
    assert_eq!((s, r), (200, Value::String("a thing".into())));
    assert!(h["content-type"].to_str().unwrap().starts_with("text/plain"));
    // A handler that raises: 502 with its message.
    let (s, h, r) = c.call(&token, &api, "GET", "/raise", &[], Vec::new()).await;
    assert_eq!(s, 502, "{r}");
    assert_eq!(h["content-type"], "application/problem+json");
    assert!(r["detail"].as_str().unwrap().contains("ValueError: bad input: no cheese"), "{r}");
    // And the instance still serves.
    c.call_ok(&token, &api, "/").await;
    c.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_without_revealing_other_users_apis() {
    let c = TestCluster::builder().start().await;
    let (token, api) = setup(&c).await;
    let other = c.user().await;

    // Unknown slug; another user's API by id, or by slug; ids that are not ids.
    assert_eq!(c.request("GET", "/call/no-such-api/x", Some(&token), &[], Vec::new()).await.0, 404);
    for path in ["", "/status", "/versions", "/logs"] {
        let (s, r) = c.get(&format!("/api/v1/apis/{}{path}", api.id), Some(&other)).await;
        assert_eq!(s, 404, "{path}: {r}");
    }
    assert_eq!(c.post(&format!("/api/v1/apis/{}/deploy", api.id), Some(&other), json!({})).await.0, 404);
    assert_eq!(c.request("DELETE", &format!("/api/v1/apis/{}", api.id), Some(&other), &[], Vec::new()).await.0, 404);
    assert_eq!(c.get("/api/v1/apis/not-a-uuid/status", Some(&token)).await.0, 404);
    let (s, _, r) = c.call(&other, &api, "GET", "/", &[], Vec::new()).await;
    assert_eq!(s, 404, "a private API is not found for others: {r}");
    let (s, _, _) = c.request("GET", &format!("/call/{}/", api.slug), None, &[], Vec::new()).await;
    assert_eq!(s, 401);

    // Deploys: unknown version, replicas out of range, malformed region.
    let deploy = format!("/api/v1/apis/{}/deploy", api.id);
    let (s, r) = c.post(&deploy, Some(&token), json!({"version": 9})).await;
    assert_eq!(s, 404, "{r}");
    for replicas in [0, 99] {
        let (s, r) = c.post(&deploy, Some(&token), json!({"replicas": replicas})).await;
        assert_eq!(s, 422, "{r}");
        assert_eq!(r["field"], "replicas", "{r}");
    }
    let (s, r) = c.post(&deploy, Some(&token), json!({"region": "no spaces allowed"})).await;
    assert_eq!(s, 422, "{r}");
    // Creates: unknown runtime, empty code, empty name.
    for (body, field) in [
        (json!({"name": "x", "runtime": "cobol", "code": "x"}), "runtime"),
        (json!({"name": "x", "runtime": "python", "code": "  "}), "code"),
        (json!({"name": "", "runtime": "python", "code": "x"}), "name"),
    ] {
        let (s, r) = c.post("/api/v1/apis", Some(&token), body).await;
        assert_eq!(s, 422, "{r}");
        assert_eq!(r["field"], field, "{r}");
    }
    // A call body over the limit.
    let (s, _, r) = c.call(&token, &api, "POST", "/", &[], vec![b'x'; 2 * 1024 * 1024]).await;
    assert_eq!(s, 413, "{r}");
    // The instance still serves after all of it.
    c.call_ok(&token, &api, "/").await;
    c.stop().await;
}

#[tokio::test]
async fn a_handler_that_does_not_load_fails_the_deploy_with_its_message() {
    let c = TestCluster::builder().start().await;
    let token = c.user().await;
    let cases = [
        ("python", "def handler(event):\n    return (\n", "SyntaxError"),
        ("python", "import no_such_module\ndef handler(event):\n    return 1\n", "no_such_module"),
        ("python", "def not_the_handler(event):\n    return 1\n", "handler"),
        ("nodejs", "exports.handler = async (event) => { return ; ;; }}\n", "SyntaxError"),
        ("go", "package main\n\nfunc Handler(event map[string]any) (any, error) {\n\treturn undefinedThing, nil\n}\n", "handler.go"),
    ];
    for (i, (runtime, code, expect)) in cases.iter().enumerate() {
        let api = c.create_api(&token, &format!("broken {i}"), runtime, code).await;
        let (s, r) = c.post(&format!("/api/v1/apis/{}/deploy", api.id), Some(&token), json!({})).await;
        assert_eq!(s, 202, "{r}");
        let st = c.wait_state(&token, &api, "failed", None, Duration::from_secs(120)).await;
        assert!(st["reason"].as_str().unwrap().contains(expect), "{runtime}: {st}");
        let (s, _, r) = c.call(&token, &api, "GET", "/", &[], Vec::new()).await;
        assert_eq!(s, 503, "{r}");
    }
    c.stop().await;
}

#[tokio::test]
async fn node_and_go_handlers_serve() {
    let c = TestCluster::builder().start().await;
    let token = c.user().await;
    let node = c.create_api(&token, "node echo", "node", "exports.handler = async (event) => ({ got: event.path, q: event.query.q });\n").await;
    let go = c
        .create_api(
            &token,
            "go echo",
            "go",
            "package main\n\nimport \"errors\"\n\nfunc Handler(event map[string]any) (any, error) {\n\tif event[\"path\"] == \"/fail\" {\n\t\treturn nil, errors.New(\"go says no\")\n\t}\n\treturn map[string]any{\"got\": event[\"path\"]}, nil\n}\n",
        )
        .await;
    c.deploy(&token, &node, json!({})).await;
    c.deploy(&token, &go, json!({})).await;
    let r = c.call_ok(&token, &node, "/n?q=1").await;
    assert_eq!(r, json!({"got": "/n", "q": "1"}));
    let r = c.call_ok(&token, &go, "/g").await;
    assert_eq!(r, json!({"got": "/g"}));
    let (s, _, r) = c.call(&token, &go, "GET", "/fail", &[], Vec::new()).await;
    assert_eq!(s, 502, "{r}");
    assert!(r["detail"].as_str().unwrap().contains("go says no"), "{r}");
    c.stop().await;
}

#[tokio::test]
async fn a_crashed_handler_is_restarted_and_the_crash_shows_in_status() {
    let c = TestCluster::builder().start().await;
    let (token, api) = setup(&c).await;
    let (s, _, r) = c.call(&token, &api, "GET", "/crash", &[], Vec::new()).await;
    assert!(s == 502 || s == 503, "{s} {r}");
    // The agent restarts it with backoff; the status shows the crash.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let st = c.api_status(&token, &api).await;
        let r0 = &st["replicas"][0];
        if r0["restarts"].as_u64().unwrap_or(0) >= 1 && st["state"] == "running" {
            assert!(r0["error"].as_str().unwrap_or("").contains('3'), "the exit code shows: {st}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no restart shown: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.call_ok(&token, &api, "/").await;
    c.stop().await;
}

#[tokio::test]
async fn a_slow_handler_answers_504_and_the_instance_recovers() {
    let c = TestCluster::builder().call_timeout(Duration::from_secs(2)).start().await;
    let (token, api) = setup(&c).await;
    let started = std::time::Instant::now();
    let (s, _, r) = c.call(&token, &api, "GET", "/sleep", &[], Vec::new()).await;
    assert_eq!(s, 504, "{r}");
    assert!(started.elapsed() < Duration::from_secs(10));
    c.wait_state(&token, &api, "running", None, Duration::from_secs(60)).await;
    c.call_ok(&token, &api, "/").await;
    c.stop().await;
}

#[tokio::test]
async fn logs_show_handler_output_and_follow_streams_it() {
    let c = TestCluster::builder().start().await;
    let (token, api) = setup(&c).await;
    let (s, _, r) = c.call(&token, &api, "GET", "/print", &[], Vec::new()).await;
    assert_eq!(s, 200, "{r}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, logs) = c.get(&format!("/api/v1/apis/{}/logs?tail=50", api.id), Some(&token)).await;
        assert_eq!(s, 200, "{logs}");
        let lines = logs["lines"].as_array().unwrap();
        let has = |text: &str, stream: &str| lines.iter().any(|l| l["line"].as_str().unwrap_or("").contains(text) && l["stream"] == stream);
        if has("hello from the handler", "stdout") && has("and from stderr", "stderr") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lines missing: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, r) = c.get(&format!("/api/v1/apis/{}/logs?tail=0", api.id), Some(&token)).await;
    assert_eq!(s, 422, "{r}");

    // Follow: a line printed after the stream opened arrives as a server-sent event.
    let mut resp = c
        .http
        .get(format!("{}/api/v1/apis/{}/logs?follow=true&tail=1", c.url, api.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    c.call(&token, &api, "GET", "/print", &[], Vec::new()).await;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.matches("hello from the handler").count() >= 2 || (seen.contains("data:") && seen.matches("hello from the handler").count() >= 1 && seen.contains("and from stderr")) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    drop(resp);
    c.stop().await;
}

#[tokio::test]
async fn stop_and_delete_take_the_api_down() {
    let c = TestCluster::builder().start().await;
    let (token, api) = setup(&c).await;
    let (s, r) = c.post(&format!("/api/v1/apis/{}/stop", api.id), Some(&token), json!({})).await;
    assert_eq!(s, 202, "{r}");
    c.wait_state(&token, &api, "stopped", None, Duration::from_secs(30)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !c.containers().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "instance container left: {:?}", c.containers());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _, r) = c.call(&token, &api, "GET", "/", &[], Vec::new()).await;
    assert_eq!(s, 503, "{r}");
    // Deploy again, then delete: the instance goes, and the slug is unknown.
    c.deploy(&token, &api, json!({})).await;
    c.call_ok(&token, &api, "/").await;
    let (s, _, r) = c.request("DELETE", &format!("/api/v1/apis/{}", api.id), Some(&token), &[], Vec::new()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(c.get(&format!("/api/v1/apis/{}", api.id), Some(&token)).await.0, 404);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, _, _) = c.call(&token, &api, "GET", "/", &[], Vec::new()).await;
        if s == 404 && c.containers().is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {s}, containers {:?}", c.containers());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}
