//! Login bursts at the edge: thousands of parallel wrong-password logins get no more
//! guesses evaluated (401s) than the throttle allows per account, the rest are 429 or 503
//! with `Retry-After`, and nothing fails or hangs.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use serde_json::json;
use souq_tests::TestCluster;
use tokio::{sync::Semaphore, task::JoinSet};

/// Logins in one burst.
const BURST: usize = 2_000;
/// Logins in flight at once: enough to race, few enough sockets for a small machine.
const IN_FLIGHT: usize = 256;
/// Guesses the account throttle lets through per window.
const LIMIT: usize = 5;
const PASSWORD: &str = "a long enough password";

/// One answer: its status and whether it carried `Retry-After`.
type Answer = (u16, bool);

/// Sends every `(client, email)` login with a wrong password, `IN_FLIGHT` at a time;
/// returns the answers in the order given.
async fn burst(url: &str, logins: Vec<(reqwest::Client, String)>) -> Vec<Answer> {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    for (i, (client, email)) in logins.into_iter().enumerate() {
        let gate = gate.clone();
        let url = format!("{url}/api/v1/auth/login");
        set.spawn(async move {
            let _slot = gate.acquire_owned().await.expect("the gate stays open");
            let body = json!({"email": email, "password": format!("wrong guess {i}")});
            let resp = client.post(url).json(&body).send().await.expect("the edge answers");
            let answer = (resp.status().as_u16(), resp.headers().contains_key("retry-after"));
            let _ = resp.bytes().await;
            (i, answer)
        });
    }
    let mut answers = vec![(0, false); set.len()];
    while let Some(done) = set.join_next().await {
        let (i, answer) = done.expect("a login task panicked");
        answers[i] = answer;
    }
    answers
}

/// Answers counted by status.
fn tally(answers: &[Answer]) -> BTreeMap<u16, usize> {
    let mut by_status = BTreeMap::new();
    for (status, _) in answers {
        *by_status.entry(*status).or_default() += 1;
    }
    by_status
}

/// Every answer is a verdict (401) or a refusal with `Retry-After` (429, 503).
fn assert_only_verdicts_and_refusals(answers: &[Answer]) {
    for (status, retry_after) in answers {
        match status {
            401 => {}
            429 | 503 => assert!(retry_after, "a {status} without Retry-After"),
            other => panic!("unexpected status {other}: {:?}", tally(answers)),
        }
    }
}

/// The process's peak resident memory so far, in KiB (the whole cluster runs in it).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Signs `email` up from `ip`, waiting out the hashing gate's 503s. Signups are limited
/// per client address, so each account signs up from the address it is attacked from,
/// on a connection of its own (a pooled one would idle past the edge's timeout while the
/// other accounts sign up).
async fn sign_up(c: &TestCluster, ip: IpAddr, email: &str) {
    let url = format!("{}/api/v1/auth/signup", c.url);
    let client = reqwest::Client::builder().local_address(ip).pool_max_idle_per_host(0).build().expect("a client");
    loop {
        let resp = client.post(&url).json(&json!({"email": email, "password": PASSWORD})).send().await.expect("the edge answers");
        let status = resp.status().as_u16();
        match status {
            202 => return,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("signup: {status} {}", resp.text().await.unwrap_or_default()),
        }
    }
}

/// A pooled client whose connections come from `ip`, so each account's burst has its own
/// client address and only the account throttle stands in its way.
fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip).pool_max_idle_per_host(IN_FLIGHT).build().expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_bursts_evaluate_at_most_the_limit_per_account() {
    let c = TestCluster::builder().agents(0).start().await;
    let hwm_start = peak_rss_kib();

    // 2,000 parallel wrong guesses at one account.
    let email = TestCluster::email();
    sign_up(&c, IpAddr::V4(Ipv4Addr::LOCALHOST), &email).await;
    let client = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let logins = (0..BURST).map(|_| (client.clone(), email.clone())).collect();
    let answers = tokio::time::timeout(Duration::from_secs(600), burst(&c.url, logins)).await.expect("the burst hung");
    let one = tally(&answers);
    let hwm_one = peak_rss_kib();
    eprintln!("one account, {BURST} logins: {one:?}; VmHWM {hwm_start} kB -> {hwm_one} kB");
    assert_only_verdicts_and_refusals(&answers);
    let evaluated = one.get(&401).copied().unwrap_or(0);
    assert!((1..=LIMIT).contains(&evaluated), "{evaluated} guesses evaluated: {one:?}");

    // The burst blocked the account: even the right password waits.
    let (status, body) = c.post("/api/v1/auth/login", None, json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(status, 429, "{body}");

    // 2,000 across 200 accounts, 10 each, each account from its own address.
    let accounts: Vec<String> = (0..BURST / 10).map(|_| TestCluster::email()).collect();
    let ips: Vec<IpAddr> = (0..accounts.len()).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 1, u8::try_from(i + 1).unwrap()))).collect();
    for (email, ip) in accounts.iter().zip(&ips) {
        sign_up(&c, *ip, email).await;
    }
    let hwm_signed_up = peak_rss_kib();
    eprintln!("{} signups: VmHWM {hwm_one} kB -> {hwm_signed_up} kB", accounts.len());
    let clients: Vec<reqwest::Client> = ips.into_iter().map(client_from).collect();
    let logins = (0..BURST).map(|i| (clients[i % accounts.len()].clone(), accounts[i % accounts.len()].clone())).collect();
    let answers = tokio::time::timeout(Duration::from_secs(600), burst(&c.url, logins)).await.expect("the burst hung");
    let many = tally(&answers);
    let hwm_many = peak_rss_kib();
    eprintln!("{} accounts, {BURST} logins: {many:?}; VmHWM {hwm_signed_up} kB -> {hwm_many} kB", accounts.len());
    assert_only_verdicts_and_refusals(&answers);
    let mut per_account = vec![0usize; accounts.len()];
    for (i, (status, _)) in answers.iter().enumerate() {
        if *status == 401 {
            per_account[i % accounts.len()] += 1;
        }
    }
    let most = per_account.iter().copied().max().unwrap_or(0);
    assert!(most <= LIMIT, "an account had {most} guesses evaluated");
    assert!(per_account.iter().sum::<usize>() <= LIMIT * accounts.len());
    c.stop().await;
}
