//! Helpers for tests of deployed APIs: create, deploy and wait, call, and call steadily
//! while something changes.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::TestCluster;

/// A created API: its id and slug.
#[derive(Debug, Clone)]
pub struct Api {
    /// The API's id.
    pub id: String,
    /// Its slug, as in `/call/{slug}/…`.
    pub slug: String,
}

/// Calls of `GET /` to one API, one after another, until [`CallLoop::finish`].
pub struct CallLoop {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    task: JoinHandle<Vec<(u16, Value)>>,
}

impl CallLoop {
    /// Stops calling and returns how many calls were made and every answer that was not
    /// 200.
    pub async fn finish(self) -> (usize, Vec<(u16, Value)>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.unwrap();
        (self.calls.load(Ordering::Relaxed), failures)
    }

    /// Stops calling and panics unless every call answered 200 and more than `min` were
    /// made.
    pub async fn all_ok(self, min: usize) {
        let (n, failures) = self.finish().await;
        assert!(failures.is_empty(), "{} of {n} calls failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        assert!(n > min, "only {n} calls");
    }
}

impl TestCluster {
    /// Starts calling `GET /` of `api` without pause, with the owner's token.
    pub fn call_loop(self: &Arc<Self>, token: &str, api: &Api) -> CallLoop {
        let (stop, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (c, token, api, flag, count) = (self.clone(), token.to_owned(), api.clone(), stop.clone(), calls.clone());
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let (s, _, r) = c.call(&token, &api, "GET", "/", &[], Vec::new()).await;
                count.fetch_add(1, Ordering::Relaxed);
                if s != 200 {
                    failures.push((s, r));
                }
            }
            failures
        });
        CallLoop { stop, calls, task }
    }

    /// Creates an API and returns it; panics unless the answer is 201.
    pub async fn create_api(&self, token: &str, name: &str, runtime: &str, code: &str) -> Api {
        let (s, r) = self.post("/api/v1/apis", Some(token), json!({"name": name, "runtime": runtime, "code": code})).await;
        assert_eq!(s, 201, "{r}");
        assert_eq!(r["version"], 1, "{r}");
        Api { id: r["id"].as_str().unwrap().to_owned(), slug: r["slug"].as_str().unwrap().to_owned() }
    }

    /// The API's status.
    pub async fn api_status(&self, token: &str, api: &Api) -> Value {
        let (s, r) = self.get(&format!("/api/v1/apis/{}/status", api.id), Some(token)).await;
        assert_eq!(s, 200, "{r}");
        r
    }

    /// Polls the status until its state is `state` (and, when given, the version), or panics
    /// after `within`.
    pub async fn wait_state(&self, token: &str, api: &Api, state: &str, version: Option<u64>, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let st = self.api_status(token, api).await;
            let version_ok = version.is_none_or(|v| st["version"] == v);
            if st["state"] == state && version_ok {
                return st;
            }
            assert!(tokio::time::Instant::now() < deadline, "not {state} (version {version:?}) in {within:?}: {st}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deploys with `body` (202 expected) and waits until it runs.
    pub async fn deploy(&self, token: &str, api: &Api, body: Value) -> Value {
        let (s, r) = self.post(&format!("/api/v1/apis/{}/deploy", api.id), Some(token), body.clone()).await;
        assert_eq!(s, 202, "{r}");
        let version = body["version"].as_u64();
        self.wait_state(token, api, "running", version, Duration::from_secs(90)).await
    }

    /// Calls a deployed API with the owner's token: method, path after the slug, headers
    /// and body; returns status, headers and body.
    pub async fn call(
        &self,
        token: &str,
        api: &Api,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.request(method, &format!("/call/{}{path}", api.slug), Some(token), headers, body).await
    }

    /// Calls until it answers 200 (the edge learns new routes within moments of a deploy).
    pub async fn call_ok(&self, token: &str, api: &Api, path: &str) -> Value {
        for _ in 0..200 {
            let (s, _, r) = self.call(token, api, "GET", path, &[], Vec::new()).await;
            if s == 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{} never answered 200", api.slug);
    }

    /// A verified provider with a deployed, published Python API answering
    /// `{"hello": path}`; returns (the provider's token, the API).
    pub async fn published(&self) -> (String, Api) {
        const HELLO: &str = "def handler(event):\n    return {\"hello\": event[\"path\"]}\n";
        let provider = self.verified_user().await;
        let api = self.create_api(&provider, "Gold Prices", "python", HELLO).await;
        let (s, r) = self.patch(&format!("/api/v1/apis/{}", api.id), Some(&provider), json!({"public": true})).await;
        assert_eq!(s, 200, "{r}");
        self.deploy(&provider, &api, json!({})).await;
        self.call_ok(&provider, &api, "/").await;
        (provider, api)
    }

    /// A verified consumer with a key; returns (token, key).
    pub async fn consumer(&self) -> (String, String) {
        let token = self.user().await;
        let (s, k) = self.post("/api/v1/keys", Some(&token), json!({"name": "laptop"})).await;
        assert_eq!(s, 201, "{k}");
        (token, k["key"].as_str().unwrap_or_default().to_owned())
    }
}
