//! Every call gets a definite answer, and a call that may have run never runs twice: an
//! API with two replicas on two agents, whose instance is killed (`docker kill`) while
//! a call sleeps in it, and whose agent shuts down while a call is in flight.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, process::Command, time::Duration};

use serde_json::{Value, json};
use souq_tests::{TestCluster, apis::Api};

/// `/slow/<id>/<seconds>` notes that it ran, then sleeps; anything else answers at once.
const SLOW: &str = r#"
import os, time
def handler(event):
    parts = event["path"].split("/")
    if len(parts) == 4 and parts[1] == "slow":
        print("ran " + parts[2], flush=True)
        time.sleep(float(parts[3]))
        return {"host": os.uname().nodename, "ran": parts[2]}
    return {"host": os.uname().nodename}
"#;

/// A cluster of two agents with the API deployed on both, and the edge sending calls to
/// both; returns (the owner's token, the API, its instances by node index).
async fn two_replicas(c: &TestCluster) -> (String, Api, Vec<String>) {
    let token = c.verified_user().await;
    let api = c.create_api(&token, "slow", "python", SLOW).await;
    let st = c.deploy(&token, &api, json!({"replicas": 2})).await;
    let replicas = st["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{st}");
    let instance_on = |node: &str| {
        replicas.iter().find(|r| r["node"] == node).map(|r| r["instance_id"].as_str().unwrap().to_owned()).unwrap()
    };
    let instances = c.nodes.iter().map(|n| instance_on(n)).collect();
    // The edge learns both routes a moment after the status shows them.
    let mut hosts = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hosts.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "calls reached only {hosts:?}");
        hosts.insert(c.call_ok(&token, &api, "/").await["host"].as_str().unwrap().to_owned());
    }
    (token, api, instances)
}

/// The instances whose log says they ran call `id`.
async fn ran(c: &TestCluster, token: &str, api: &Api, id: &str) -> Vec<String> {
    let (s, logs) = c.get(&format!("/api/v1/apis/{}/logs?tail=200", api.id), Some(token)).await;
    assert_eq!(s, 200, "{logs}");
    let want = format!("ran {id}");
    logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stream"] == "stdout" && l["line"].as_str().unwrap_or("").trim() == want)
        .map(|l| l["instance_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until an instance says it runs call `id`, and names it.
async fn running(c: &TestCluster, token: &str, api: &Api, id: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = ran(c, token, api, id).await.pop() {
            return i;
        }
        assert!(tokio::time::Instant::now() < deadline, "call {id} never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills the sandbox of `instance` on this cluster's nodes, as a crash would.
fn kill_instance(c: &TestCluster, instance: &str) {
    let mut killed = 0;
    for node in &c.nodes {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=souq.node={node}"), "--filter"])
            .arg(format!("label=souq.instance={instance}"))
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let k = Command::new("docker").args(["kill", id]).output().unwrap();
            assert!(k.status.success(), "docker kill: {}", String::from_utf8_lossy(&k.stderr));
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "one sandbox of {instance}");
}

/// A consumer of `api` (made public, with a roomy plan): (its token, its API key).
async fn consumer(c: &TestCluster, owner: &str, api: &Api) -> (String, String) {
    let (s, r) = c.patch(&format!("/api/v1/apis/{}", api.id), Some(owner), json!({"public": true})).await;
    assert_eq!(s, 200, "{r}");
    let plan = json!({"name": "bulk", "price_minor": 100, "currency": "SAR", "monthly_quota": 1000, "rate_limit_per_minute": 1000});
    let (s, r) = c.post(&format!("/api/v1/apis/{}/plans", api.id), Some(owner), plan).await;
    assert_eq!(s, 201, "{r}");
    let token = c.user().await;
    let (s, k) = c.post("/api/v1/keys", Some(&token), json!({"name": "definite"})).await;
    assert_eq!(s, 201, "{k}");
    let (s, r) =
        c.post(&format!("/api/v1/marketplace/{}/subscribe", api.slug), Some(&token), json!({"plan": "bulk"})).await;
    assert_eq!(s, 201, "{r}");
    (token, k["key"].as_str().unwrap().to_owned())
}

/// The consumer's calls as the control plane counted them, once they equal `want` and
/// stay there past a few flushes (or panics with what they were).
async fn counted(c: &TestCluster, consumer: &str, want: u64) {
    let calls =
        || async { c.get("/api/v1/usage", Some(consumer)).await.1["subscriptions"][0]["calls"].as_u64().unwrap_or(0) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = calls().await;
        assert!(seen <= want, "counted {seen}, more than the {want} calls answered");
        if seen == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "usage stuck at {seen}, want {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(calls().await, want, "a late flush counted more");
}

/// A credential for a call: the owner's token, or a consumer's API key.
#[derive(Clone, Copy)]
enum Cred<'a> {
    Token(&'a str),
    Key(&'a str),
}

/// Sends `method /call/<slug>/<path>` on its own task, past the test's borrows.
fn send(
    c: &TestCluster,
    token: &str,
    api: &Api,
    method: reqwest::Method,
    path: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    send_as(c, Cred::Token(token), api, method, path)
}

fn send_as(
    c: &TestCluster,
    cred: Cred<'_>,
    api: &Api,
    method: reqwest::Method,
    path: &str,
) -> tokio::task::JoinHandle<(u16, Value)> {
    let req = c.http.request(method, format!("{}/call/{}{path}", c.url, api.slug));
    let req = match cred {
        Cred::Token(t) => req.bearer_auth(t),
        Cred::Key(k) => req.header("x-api-key", k),
    };
    tokio::spawn(async move {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    })
}

#[tokio::test]
async fn a_post_whose_host_is_lost_gets_upstream_lost_and_never_runs_twice() {
    let c = TestCluster::builder().agents(2).start().await;
    let (token, api, _) = two_replicas(&c).await;
    let (consumer, key) = consumer(&c, &token, &api).await;
    // Answered calls count; wait until the edge knows the subscription.
    let mut answered = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while answered < 3 {
        let (s, r) = send_as(&c, Cred::Key(&key), &api, reqwest::Method::POST, "/").await.unwrap();
        match s {
            200 => answered += 1,
            401 | 403 if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("{s} {r}"),
        }
    }
    let call = send_as(&c, Cred::Key(&key), &api, reqwest::Method::POST, "/slow/post-1/20");
    let victim = running(&c, &token, &api, "post-1").await;
    kill_instance(&c, &victim);
    let (s, r) = call.await.unwrap();
    assert_eq!((s, r["type"].as_str()), (502, Some("urn:souq:problem:upstream-lost")), "{r}");
    assert_eq!(r["detail"], "the API's host was lost during the call; it may have run", "{r}");
    // The other replica never saw it: the edge answered without trying it.
    let others: Vec<String> = ran(&c, &token, &api, "post-1").await.into_iter().filter(|i| *i != victim).collect();
    assert!(others.is_empty(), "ran again on {others:?}");
    // No handler's answer came back: the call is neither metered nor counted.
    counted(&c, &consumer, answered).await;
    // The API serves on (the killed instance is restarted meanwhile).
    c.call_ok(&token, &api, "/").await;
    c.stop().await;
}

#[tokio::test]
async fn a_get_whose_host_is_lost_is_answered_by_the_other_replica() {
    let c = TestCluster::builder().agents(2).start().await;
    let (token, api, _) = two_replicas(&c).await;
    let call = send(&c, &token, &api, reqwest::Method::GET, "/slow/get-1/20");
    let victim = running(&c, &token, &api, "get-1").await;
    kill_instance(&c, &victim);
    // The other replica sleeps its 20 s too, within the route's 30 s.
    let (s, r) = call.await.unwrap();
    assert_eq!((s, r["ran"].as_str()), (200, Some("get-1")), "{r}");
    let all: BTreeSet<String> = ran(&c, &token, &api, "get-1").await.into_iter().collect();
    assert!(all.iter().any(|i| *i != victim), "the other replica ran it: {all:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_stopping_agent_finishes_its_calls_and_the_other_replica_takes_the_rest() {
    let mut c = TestCluster::builder().agents(2).start().await;
    let (token, api, instances) = two_replicas(&c).await;
    let call = send(&c, &token, &api, reqwest::Method::POST, "/slow/drain-1/2");
    let victim = running(&c, &token, &api, "drain-1").await;
    let node = instances.iter().position(|i| *i == victim).unwrap();
    // POSTs go on during the stop and after it, while the route still names the stopped
    // agent: it refuses them as having run nothing, or its port is closed.
    let during: Vec<_> =
        (0..10).map(|i| send(&c, &token, &api, reqwest::Method::POST, &format!("/slow/during-{i}/0"))).collect();
    c.restart_agent(node).await;
    let (s, r) = call.await.unwrap();
    assert_eq!((s, r["ran"].as_str()), (200, Some("drain-1")), "the call in flight finished: {r}");
    for d in during {
        let (s, r) = d.await.unwrap();
        assert_eq!(s, 200, "{r}");
    }
    for i in 0..20 {
        let (s, _, r) = c.call(&token, &api, "POST", &format!("/slow/after-{i}/0"), &[], Vec::new()).await;
        assert_eq!(s, 200, "{r}");
    }
    c.stop().await;
}
