//! `souq bench logins`: the control plane under a burst of wrong-password logins, as an
//! attacker would send them. A `souq up` started for the run gets 2,000 parallel logins
//! at one account, then 2,000 spread over 200 accounts (each from its own loopback
//! address); the run prints the answers by status, the most guesses any account had
//! evaluated (answered 401), and the `souq up` process's peak resident memory.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tokio::{sync::Semaphore, task::JoinSet};

use super::start_up;

const PASSWORD: &str = "bench password 123";

/// Options of `souq bench logins`.
#[derive(Debug, Args)]
pub struct LoginsArgs {
    /// Logins in each burst.
    #[arg(long, default_value_t = 2_000)]
    pub burst: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Accounts the second burst is spread over (at most 250, one loopback address each).
    #[arg(long, default_value_t = 200)]
    pub accounts: usize,
}

/// Runs both bursts and prints what they did.
pub async fn run(args: LoginsArgs) -> anyhow::Result<()> {
    anyhow::ensure!((1..=250).contains(&args.accounts), "--accounts must be 1 to 250");
    eprintln!("starting souq up for the benchmark…");
    let (up, url) = tokio::task::spawn_blocking(|| start_up(&[])).await??;
    let pid = up.pid();
    let http = client_from(IpAddr::V4(Ipv4Addr::LOCALHOST), args.in_flight)?;
    let victim = email(0);
    sign_up(&http, &url, &victim).await?;
    eprintln!("souq up peak RSS after start and one signup: {} MiB", peak_rss_mib(pid));

    let logins = vec![(http.clone(), victim); args.burst];
    report("one account", &burst(&url, logins, args.in_flight).await, 1, pid);

    eprintln!("signing up {} accounts…", args.accounts);
    let accounts: Vec<String> = (1..=args.accounts).map(email).collect();
    let clients = (0..args.accounts)
        .map(|i| client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 1, u8::try_from(i + 1).unwrap_or(u8::MAX))), args.in_flight))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Each from its own address: signups are limited per client address.
    for (email, client) in accounts.iter().zip(&clients) {
        sign_up(client, &url, email).await?;
    }
    let logins = (0..args.burst).map(|i| (clients[i % args.accounts].clone(), accounts[i % args.accounts].clone())).collect();
    report(&format!("{} accounts", args.accounts), &burst(&url, logins, args.in_flight).await, args.accounts, pid);
    drop(up);
    Ok(())
}

fn email(i: usize) -> String {
    format!("logins-{}-{i}@example.com", std::process::id())
}

/// A pooled client whose connections come from `ip`.
fn client_from(ip: IpAddr, in_flight: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder().local_address(ip).pool_max_idle_per_host(in_flight).build().context("http client")
}

/// Signs `email` up, waiting out the hashing gate's 503s and the signup limit's 429s.
async fn sign_up(http: &reqwest::Client, url: &str, email: &str) -> anyhow::Result<()> {
    for _ in 0..600 {
        let body = json!({"email": email, "password": PASSWORD});
        let status = http.post(format!("{url}/api/v1/auth/signup")).json(&body).send().await?.status().as_u16();
        match status {
            202 => return Ok(()),
            503 | 429 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => anyhow::bail!("signup of {email}: {other}"),
        }
    }
    anyhow::bail!("signup of {email} kept being refused")
}

/// One burst's answers: for each login, the account's index and the status.
struct Burst {
    answers: Vec<(usize, u16)>,
    took: Duration,
}

/// Sends every `(client, email)` login with a wrong password, `in_flight` at a time.
async fn burst(url: &str, logins: Vec<(reqwest::Client, String)>, in_flight: usize) -> Burst {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut set = JoinSet::new();
    let accounts: Vec<String> = {
        let mut seen: Vec<String> = logins.iter().map(|(_, e)| e.clone()).collect();
        seen.dedup();
        seen.sort();
        seen.dedup();
        seen
    };
    for (i, (client, email)) in logins.into_iter().enumerate() {
        let (gate, url) = (gate.clone(), format!("{url}/api/v1/auth/login"));
        let account = accounts.binary_search(&email).unwrap_or(0);
        set.spawn(async move {
            let _slot = gate.acquire_owned().await;
            let body = json!({"email": email, "password": format!("wrong guess {i}")});
            let status = match client.post(url).json(&body).send().await {
                Ok(resp) => resp.status().as_u16(),
                Err(_) => 0,
            };
            (account, status)
        });
    }
    let answers = set.join_all().await;
    Burst { answers, took: started.elapsed() }
}

/// Prints a burst's answers by status, the most guesses evaluated for one account, and
/// the server's peak resident memory so far.
fn report(name: &str, burst: &Burst, accounts: usize, pid: u32) {
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut evaluated = vec![0usize; accounts];
    for (account, status) in &burst.answers {
        *by_status.entry(*status).or_default() += 1;
        if *status == 401
            && let Some(n) = evaluated.get_mut(*account)
        {
            *n += 1;
        }
    }
    let statuses: Vec<String> = by_status.iter().map(|(s, n)| if *s == 0 { format!("no answer: {n}") } else { format!("{s}: {n}") }).collect();
    println!(
        "{name}: {} logins in {:.1} s; {}; most guesses evaluated for one account: {}; souq up peak RSS {} MiB",
        burst.answers.len(),
        burst.took.as_secs_f64(),
        statuses.join(", "),
        evaluated.iter().max().copied().unwrap_or(0),
        peak_rss_mib(pid),
    );
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kib / 1024
}
