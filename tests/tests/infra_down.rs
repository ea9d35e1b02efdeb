//! When Docker, an agent or the control plane is down, answers are 503, not hangs.
use std::time::{Duration, Instant};

use serde_json::json;
use souq_tests::TestCluster;

#[tokio::test]
async fn docker_unreachable_is_503_saying_so() {
    let c = TestCluster::builder().docker_host("unix:///nonexistent/docker.sock").start().await;
    let t = c.user().await;
    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "print(1)"})).await;
    assert_eq!(s, 503, "{p}");
    assert_eq!(p["type"], "urn:souq:problem:docker-unavailable", "{p}");
    c.stop().await;
}

#[tokio::test]
async fn no_agent_and_dead_agent_are_503() {
    let mut c = TestCluster::builder().start().await;
    let t = c.user().await;
    // The agent goes away while the control plane still counts it as live.
    c.stop_agents().await;
    let started = Instant::now();
    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "print(1)"})).await;
    assert_eq!(s, 503, "{p}");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(p["detail"].as_str().unwrap().contains("unreachable"), "{p}");
    c.stop().await;

    let c = TestCluster::builder().agents(0).start().await;
    let t = c.user().await;
    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "print(1)"})).await;
    assert_eq!(s, 503, "{p}");
    assert_eq!(p["type"], "urn:souq:problem:no-capacity");
    c.stop().await;
}

#[tokio::test]
async fn control_plane_down_is_503_not_a_hang() {
    let mut c = TestCluster::builder().agents(0).start().await;
    let t = c.user().await;
    c.stop_control_plane().await;
    let started = Instant::now();
    let (s, p) = c.get("/api/v1/auth/me", Some(&t)).await;
    assert_eq!(s, 503, "{p}");
    let (s, _) = c.post("/api/v1/auth/login", None, json!({"email": "a@example.com", "password": "whatever1"})).await;
    assert_eq!(s, 503);
    let (s, _) = c.get("/readyz", None).await;
    assert_eq!(s, 503);
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    c.stop().await;
}
