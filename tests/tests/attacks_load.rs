//! Attack suite, load and request size: a burst of executes past the agent's running
//! slots and queue is turned away with 503 + Retry-After while the admitted ones finish,
//! and code over the size limit is refused by its bytes, whatever its characters.
#![allow(clippy::unwrap_used)]
use std::time::Instant;

use serde_json::json;
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, execute_raw, rss_kib},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_queue_is_refused_with_503_and_retry_after() {
    let c = TestCluster::builder().capacity(2, 2).start().await;
    let t = c.unverified_user().await;
    assert_healthy(&c, &t).await;
    let rss_before = rss_kib();
    let started = Instant::now();
    let burst: Vec<_> = (0..10)
        .map(|i| {
            let (url, http, t) = (c.url.clone(), c.http.clone(), t.clone());
            let body = json!({"runtime": "python", "code": format!("import time\ntime.sleep(3)\nprint({i})"), "timeout_ms": 20_000});
            tokio::spawn(async move {
                let (s, retry, r) = execute_raw(&url, &http, &t, &body).await;
                (i, s, retry, r, started.elapsed())
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for task in burst {
        let (i, s, retry, r, took) = task.await.unwrap();
        match s {
            200 => {
                assert_eq!((r["stdout"].as_str(), r["exit_code"].as_i64()), (Some(format!("{i}\n").as_str()), Some(0)), "{r}");
                ok.push(took);
            }
            503 => {
                assert_eq!(r["type"], "urn:souq:problem:no-capacity", "{r}");
                let secs: u64 = retry.as_deref().expect("503 without Retry-After").parse().unwrap();
                assert!((1..=60).contains(&secs), "Retry-After {secs}");
                refused.push((took, secs));
            }
            other => panic!("execute {i}: unexpected {other}: {r}"),
        }
    }
    eprintln!(
        "burst of 10 on 2 slots + 2 queued: {} answered 200 after {ok:?}; {} refused with 503 (after, Retry-After) {refused:?}; rss +{} KiB",
        ok.len(),
        refused.len(),
        rss_kib().saturating_sub(rss_before)
    );
    assert!((2..=4).contains(&ok.len()), "{} admitted", ok.len());
    assert_eq!(ok.len() + refused.len(), 10);
    // Refusals are immediate, not after waiting for a slot.
    assert!(refused.iter().all(|(took, _)| took.as_secs() < 3), "{refused:?}");
    assert!(c.containers().is_empty(), "{:?}", c.containers());
    assert_healthy(&c, &t).await;
    c.stop().await;
}

#[tokio::test]
async fn code_size_is_limited_in_bytes_not_characters() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let limit = souq_edge_proxy::MAX_BODY_BYTES;
    // Arabic letters are two bytes each: fewer characters than the limit, more bytes.
    let letters = "س".repeat(limit / 2 + 1024);
    assert!(letters.chars().count() < limit && letters.len() > limit);
    for (runtime, code) in [("python", format!("# {letters}\nprint(1)")), ("go", format!("package main\n// {letters}\nfunc main() {{}}"))] {
        let (s, p) = c.execute(&t, json!({"runtime": runtime, "code": code})).await;
        assert_eq!(s, 413, "{runtime}: {p}");
        assert_eq!(p["type"], "urn:souq:problem:payload-too-large", "{runtime}: {p}");
    }
    // Just under the limit in bytes, the same kind of code runs.
    let letters = "س".repeat(limit / 2 - 1024);
    let code = format!("# {letters}\nprint('ran')");
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": code})).await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("ran\n")), "{r}");
    assert!(c.containers().is_empty());
    assert_healthy(&c, &t).await;
    c.stop().await;
}
