//! Deployed APIs across several agents: replicas spread and are listed per node,
//! placement honours regions, calls keep flowing while the control plane is down, and a
//! rollback replaces instances without dropping a call.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::json;
use souq_tests::TestCluster;

const WHO: &str = "import os\ndef handler(event):\n    return {\"host\": os.uname().nodename, \"v\": VERSION}\nVERSION = 1\n";

#[tokio::test]
async fn replicas_spread_over_agents_and_status_lists_each() {
    let c = TestCluster::builder().agents(2).start().await;
    let token = c.user().await;
    let api = c.create_api(&token, "who", "python", WHO).await;
    let st = c.deploy(&token, &api, json!({"replicas": 2})).await;
    let replicas = st["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{st}");
    let nodes: BTreeSet<&str> = replicas.iter().map(|r| r["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, c.nodes.iter().map(String::as_str).collect(), "one replica per agent: {st}");
    assert!(replicas.iter().all(|r| r["state"] == "running"), "{st}");
    // The edge balances over both, once its route table (streamed a moment after the
    // status shows both running) lists them.
    let mut hosts = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hosts.len() < 2 && tokio::time::Instant::now() < deadline {
        for _ in 0..20 {
            hosts.insert(c.call_ok(&token, &api, "/").await["host"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(hosts.len(), 2, "calls reached {hosts:?}");
    c.stop().await;
}

#[tokio::test]
async fn placement_honours_the_region_and_waits_when_nothing_fits() {
    let c = TestCluster::builder().agents(2).regions(&["me-central", "eu-west"]).start().await;
    let token = c.user().await;
    let api = c.create_api(&token, "regional", "python", WHO).await;
    let st = c.deploy(&token, &api, json!({"replicas": 2, "region": "eu-west"})).await;
    assert!(st["replicas"].as_array().unwrap().iter().all(|r| r["node"] == c.nodes[1].as_str()), "{st}");
    let other = c.create_api(&token, "nowhere", "python", WHO).await;
    let (s, r) = c.post(&format!("/api/v1/apis/{}/deploy", other.id), Some(&token), json!({"region": "af-south"})).await;
    assert_eq!(s, 202, "{r}");
    // Pending at once; the reconciler's next pass says why.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = c.api_status(&token, &other).await;
        assert_eq!(st["state"], "pending", "{st}");
        if st["reason"].as_str().unwrap_or("").contains("af-south") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reason given: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
}

#[tokio::test]
async fn calls_keep_flowing_while_the_control_plane_is_down() {
    let mut c = TestCluster::builder().agents(2).start().await;
    let token = c.user().await;
    let api = c.create_api(&token, "resilient", "python", WHO).await;
    c.deploy(&token, &api, json!({"replicas": 2})).await;
    c.call_ok(&token, &api, "/").await;
    c.stop_control_plane().await;
    for _ in 0..50 {
        let (s, _, r) = c.call(&token, &api, "GET", "/", &[], Vec::new()).await;
        assert_eq!(s, 200, "{r}");
    }
    // Management needs the control plane: a clear 503, not a hang.
    let (s, r) = c.get(&format!("/api/v1/apis/{}/status", api.id), Some(&token)).await;
    assert_eq!(s, 503, "{r}");
    c.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_gets_its_instances_back() {
    let mut c = TestCluster::builder().start().await;
    let token = c.user().await;
    let api = c.create_api(&token, "comeback", "python", WHO).await;
    let before = c.deploy(&token, &api, json!({})).await;
    let first_host = c.call_ok(&token, &api, "/").await["host"].clone();
    // The agent comes back with no instance (it removes leftovers on start); its first
    // report shows the instance missing, and the control plane deploys it again.
    c.restart_agent(0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (s, _, r) = c.call(&token, &api, "GET", "/", &[], Vec::new()).await;
        if s == 200 && r["host"] != first_host {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not redeployed: {s} {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = c.wait_state(&token, &api, "running", None, Duration::from_secs(10)).await;
    assert_eq!(after["replicas"][0]["instance_id"], before["replicas"][0]["instance_id"], "{after}");
    assert_eq!(c.containers().len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn a_rollback_replaces_instances_without_dropping_calls() {
    let c = Arc::new(TestCluster::builder().agents(2).start().await);
    let token = c.user().await;
    let api = c.create_api(&token, "rolling", "python", WHO).await;
    let (s, r) = c.put(&format!("/api/v1/apis/{}/code", api.id), Some(&token), json!({"code": WHO.replace("VERSION = 1", "VERSION = 2")})).await;
    assert_eq!(s, 200, "{r}");
    c.deploy(&token, &api, json!({"replicas": 2})).await;
    assert_eq!(c.call_ok(&token, &api, "/").await["v"], 2);

    // Call without pause while rolling back to version 1; every call must succeed.
    let calls = c.call_loop(&token, &api);
    let st = c.deploy(&token, &api, json!({"version": 1, "replicas": 2})).await;
    assert_eq!(st["version"], 1);
    // Wait until the old instances are gone, with calls still going.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = c.api_status(&token, &api).await;
        if st["replicas"].as_array().unwrap().iter().all(|r| r["version"] == 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "old instances stay: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    calls.all_ok(20).await;
    assert_eq!(c.call_ok(&token, &api, "/").await["v"], 1);
    Arc::into_inner(c).unwrap().stop().await;
}
