//! Operators and the nodes (issue 14): the admin endpoints need the control plane's admin
//! token; a cordoned node gets no new instances; a drain moves an instance with no failed
//! call; an agent that stops for good is marked down and its replica replaced on another node.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use souq_proto::{
    nodes::{ListNodesRequest, nodes_client::NodesClient},
    tls::Role,
};
use souq_tests::{TestCluster, apis::Api};

const ADMIN: &str = "test-admin-token-0123456789abcdef-0123456789";
const WHO: &str = "import os\ndef handler(event):\n    return {\"host\": os.uname().nodename}\n";

/// The admin list, asserting 200.
async fn nodes(c: &TestCluster) -> Vec<Value> {
    let (s, r) = c.get("/api/v1/admin/nodes", Some(ADMIN)).await;
    assert_eq!(s, 200, "{r}");
    r["nodes"].as_array().unwrap().clone()
}

/// One node of the admin list.
async fn node(c: &TestCluster, name: &str) -> Value {
    nodes(c).await.into_iter().find(|n| n["name"] == name).unwrap()
}

/// `POST /api/v1/admin/nodes/{name}/{action}` with the admin token.
async fn act(c: &TestCluster, name: &str, action: &str) -> (u16, Value) {
    c.post(&format!("/api/v1/admin/nodes/{name}/{action}"), Some(ADMIN), json!({})).await
}

/// The nodes an API's replicas are on.
fn placed(st: &Value) -> Vec<String> {
    let mut on: Vec<String> =
        st["replicas"].as_array().unwrap().iter().map(|r| r["node"].as_str().unwrap().to_owned()).collect();
    on.sort();
    on
}

/// Polls the API's status until `done` holds, or panics after `within`.
async fn wait_until(c: &TestCluster, token: &str, api: &Api, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let st = c.api_status(token, api).await;
        if done(&st) {
            return st;
        }
        assert!(tokio::time::Instant::now() < deadline, "not there in {within:?}: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let c = TestCluster::builder().agents(2).admin_token(ADMIN).start().await;
    let (s, r) = c.get("/api/v1/admin/nodes", None).await;
    assert_eq!((s, r["type"].as_str()), (401, Some("urn:souq:problem:unauthenticated")), "{r}");
    let user = c.unverified_user().await;
    for wrong in ["not-the-admin-token", user.as_str(), &ADMIN[..ADMIN.len() - 1]] {
        let (s, r) = c.get("/api/v1/admin/nodes", Some(wrong)).await;
        assert_eq!(s, 401, "{r}");
        let (s, r) = c.post(&format!("/api/v1/admin/nodes/{}/drain", c.nodes[0]), Some(wrong), json!({})).await;
        assert_eq!(s, 401, "{r}");
    }
    let listed = nodes(&c).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for n in &listed {
        assert_eq!(
            (n["state"].as_str(), n["schedulable"].as_bool(), n["draining"].as_bool()),
            (Some("up"), Some(true), Some(false)),
            "{n}"
        );
        assert_eq!(
            (n["instances"].as_u64(), n["docker_ok"].as_bool(), n["region"].as_str()),
            (Some(0), Some(true), Some("test")),
            "{n}"
        );
        let beat = n["last_heartbeat"].as_str().unwrap();
        assert!(beat.len() == 20 && beat.as_bytes()[10] == b'T' && beat.ends_with('Z'), "RFC 3339 in UTC: {n}");
        assert!(
            n["id"].as_str().is_some_and(|id| !id.is_empty())
                && n["address"].as_str().is_some_and(|a| a.starts_with("http")),
            "{n}"
        );
    }
    for action in ["cordon", "drain", "uncordon"] {
        let (s, r) = act(&c, "no-such-node", action).await;
        assert_eq!(s, 404, "{action}: {r}");
    }
    // Only edges may call the control plane's Nodes service, admin token or not.
    let agent = c.issue(Role::Agent, "agent-0");
    let mut nodes_client = NodesClient::new(TestCluster::channel(&agent, &c.control_plane_url, Role::ControlPlane));
    let mut req = tonic::Request::new(ListNodesRequest {});
    souq_proto::set_bearer(&mut req, ADMIN);
    let err = nodes_client.list(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    c.stop().await;

    // Without an admin token configured, nobody gets in.
    let c = TestCluster::builder().agents(1).start().await;
    let (s, r) = c.get("/api/v1/admin/nodes", Some(ADMIN)).await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(r["detail"], "admin access is not configured", "{r}");
    let (s, r) = act(&c, &c.nodes[0], "cordon").await;
    assert_eq!(s, 403, "{r}");
    c.stop().await;
}

#[tokio::test]
async fn cordon_stops_placements_and_a_drain_moves_a_replica_without_a_failed_call() {
    let c = Arc::new(TestCluster::builder().agents(3).admin_token(ADMIN).start().await);
    let token = c.user().await;
    let (n0, n1, n2) = (c.nodes[0].clone(), c.nodes[1].clone(), c.nodes[2].clone());

    // Cordoned: n0 and n1 take nothing new, so both replicas land on n2.
    for n in [&n0, &n1] {
        let (s, r) = act(&c, n, "cordon").await;
        assert_eq!((s, r["schedulable"].as_bool(), r["draining"].as_bool()), (200, Some(false), Some(false)), "{r}");
    }
    let pinned = c.create_api(&token, "pinned", "python", WHO).await;
    let st = c.deploy(&token, &pinned, json!({"replicas": 2})).await;
    assert_eq!(placed(&st), [n2.clone(), n2.clone()], "{st}");
    for n in [&n0, &n1] {
        let (s, r) = act(&c, n, "uncordon").await;
        assert_eq!((s, r["schedulable"].as_bool()), (200, Some(true)), "{r}");
    }
    assert_eq!(node(&c, &n2).await["instances"], 2);

    // Two replicas on n0 and n1 (n2 is the fullest); n0 is drained while calls flow.
    let api = c.create_api(&token, "moving", "python", WHO).await;
    let st = c.deploy(&token, &api, json!({"replicas": 2})).await;
    assert_eq!(placed(&st), [n0.clone(), n1.clone()], "{st}");
    c.call_ok(&token, &api, "/").await;
    let calls = c.call_loop(&token, &api);
    let (s, r) = act(&c, &n0, "drain").await;
    assert_eq!((s, r["draining"].as_bool(), r["schedulable"].as_bool()), (202, Some(true), Some(false)), "{r}");
    let st = wait_until(&c, &token, &api, Duration::from_secs(90), |st| {
        let replicas = st["replicas"].as_array().unwrap();
        replicas.len() == 2 && replicas.iter().all(|r| r["state"] == "running" && r["node"] != n0.as_str())
    })
    .await;
    assert_eq!(placed(&st), [n1.clone(), n2.clone()], "{st}");
    // The edge's table follows within moments; calls keep going meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    calls.all_ok(20).await;
    let drained = node(&c, &n0).await;
    assert_eq!((drained["draining"].as_bool(), drained["instances"].as_u64()), (Some(true), Some(0)), "{drained}");
    let (s, r) = act(&c, &n0, "uncordon").await;
    assert_eq!((s, r["draining"].as_bool(), r["schedulable"].as_bool()), (200, Some(false), Some(true)), "{r}");
    Arc::into_inner(c).unwrap().stop().await;
}

#[tokio::test]
async fn a_lost_agent_is_marked_down_and_its_replica_replaced() {
    let mut c = TestCluster::builder().agents(2).admin_token(ADMIN).start().await;
    let token = c.user().await;
    let api = c.create_api(&token, "survivor", "python", WHO).await;
    let st = c.deploy(&token, &api, json!({})).await;
    let lost = placed(&st).remove(0);
    let k = c.nodes.iter().position(|n| *n == lost).unwrap();
    let other = c.nodes[1 - k].clone();
    c.call_ok(&token, &api, "/").await;

    c.stop_agent(k).await;
    // Down once silent past the node TTL (8 s by default).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = node(&c, &lost).await;
        if n["state"] == "down" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never marked down: {n}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let st = wait_until(&c, &token, &api, Duration::from_secs(90), |st| {
        let replicas = st["replicas"].as_array().unwrap();
        replicas.len() == 1 && replicas[0]["node"] == other.as_str() && replicas[0]["state"] == "running"
    })
    .await;
    assert_eq!(st["state"], "running", "{st}");
    c.call_ok(&token, &api, "/").await;
    assert_eq!(node(&c, &lost).await["instances"], 0);
    c.stop().await;
}
