//! One user cannot take a node's whole execute capacity: past `--max-concurrent-per-user`
//! their executes are refused at once with 429 `too-many-concurrent`, before they take a
//! running slot or a place in the queue; and a run waiting behind the same user's earlier
//! one (one sandbox per user and runtime) waits without a running slot. So another
//! user's execute runs at once.
#![allow(clippy::unwrap_used)]
use std::time::{Duration, Instant};

use serde_json::json;
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, execute_raw},
};

/// How long each of the flooder's executes sleeps: long enough that all of them still
/// run while the other user's execute is answered.
const SLEEP_S: u64 = 12;
/// The flooder's executes at once; more than the node's 2 slots and 4 places in line.
const FLOOD: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_flooding_executes_leaves_room_for_another() {
    // Two slots: the flooder's second run waits for their first (same user, same
    // runtime) and must not sit on the second slot meanwhile.
    let c = TestCluster::builder().capacity(2, 4).per_user(2).start().await;
    let flooder = c.unverified_user().await;
    let other = c.unverified_user().await;

    let started = Instant::now();
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let (url, http, t) = (c.url.clone(), c.http.clone(), flooder.clone());
            let code = format!("import time\ntime.sleep({SLEEP_S})\nprint({i})");
            let body = json!({"runtime": "python", "code": code, "timeout_ms": 30_000});
            tokio::spawn(async move {
                let (s, retry, r) = execute_raw(&url, &http, &t, &body).await;
                (s, retry, r, started.elapsed())
            })
        })
        .collect();
    // Give the flood a moment to reach the agent: the flooder's first execute runs, the
    // second waits for it.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let asked = Instant::now();
    let (s, r) = c.execute(&other, json!({"runtime": "python", "code": "print('mine')"})).await;
    let latency = asked.elapsed();
    eprintln!("the other user's execute, during the flood: {s} in {latency:?}");
    assert_eq!((s, r["stdout"].as_str()), (200, Some("mine\n")), "{r}");
    assert!(latency < Duration::from_secs(SLEEP_S - 4), "it waited for the flood: {latency:?}");

    let (mut ran, mut refused) = (Vec::new(), Vec::new());
    for task in flood {
        let (s, retry, r, took) = task.await.unwrap();
        match s {
            200 => ran.push(took),
            429 => {
                assert_eq!(r["type"], "urn:souq:problem:too-many-concurrent", "{r}");
                let secs: u64 = retry.as_deref().expect("429 without Retry-After").parse().unwrap();
                assert!((1..=60).contains(&secs), "Retry-After {secs}");
                refused.push(took);
            }
            other => panic!("flood execute: unexpected {other}: {r}"),
        }
    }
    eprintln!("flood of {FLOOD}: {} ran (answered after {ran:?}); {} refused with 429 after {refused:?}", ran.len(), refused.len());
    assert_eq!(ran.len(), 2, "the flooder runs at most their cap");
    assert_eq!(refused.len(), FLOOD - 2);
    // Refused at once, not queued until a place came free.
    assert!(refused.iter().all(|took| *took < Duration::from_secs(SLEEP_S / 2)), "{refused:?}");
    // Their places came back: the flooder runs again.
    assert_healthy(&c, &flooder).await;
    c.stop().await;
}
