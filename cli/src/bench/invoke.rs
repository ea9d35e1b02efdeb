//! `souq bench invoke`: a deployed trivial Python handler called through the edge's data
//! path (edge → agent → instance): warm latency at concurrency 1, throughput at
//! concurrency 16 and 64, and the time from a deploy to its first successful call.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::{ms, percentile, target, user};

/// The handler measured: as little work as a handler can do.
pub(super) const HANDLER: &str = "def handler(event):\n    return {\"ok\": True}\n";

/// Options of `souq bench invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// A running edge to measure, e.g. http://127.0.0.1:8080; without it, a `souq up` is
    /// started for the run.
    #[arg(long)]
    pub url: Option<String>,
    /// Calls in the concurrency-1 latency series.
    #[arg(long, default_value_t = 5000)]
    pub requests: usize,
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 15)]
    pub duration_s: u64,
    /// Deploys timed from request to first successful call.
    #[arg(long, default_value_t = 20)]
    pub deploys: usize,
}

/// A benchmark's client of one edge: a user's token, and the key calls are made with
/// (the token when none).
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) url: String,
    pub(super) token: String,
    pub(super) key: Option<String>,
}

impl Client {
    pub(super) async fn create(&self, name: &str) -> anyhow::Result<(String, String)> {
        let body = json!({"name": name, "runtime": "python", "code": HANDLER});
        let r: Value = self.http.post(format!("{}/api/v1/apis", self.url)).bearer_auth(&self.token).json(&body).send().await?.json().await?;
        let id = r["id"].as_str().context("create failed")?.to_owned();
        Ok((id, r["slug"].as_str().context("no slug")?.to_owned()))
    }

    pub(super) async fn deploy(&self, id: &str) -> anyhow::Result<()> {
        let resp = self.http.post(format!("{}/api/v1/apis/{id}/deploy", self.url)).bearer_auth(&self.token).json(&json!({})).send().await?;
        if resp.status() != 202 {
            bail!("deploy failed: {} {}", resp.status(), resp.text().await?);
        }
        Ok(())
    }

    pub(super) async fn call(&self, slug: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let req = self.http.get(format!("{}/call/{slug}/", self.url));
        let req = match &self.key {
            Some(k) => req.header("x-api-key", k),
            None => req.bearer_auth(&self.token),
        };
        let resp = req.send().await?;
        let status = resp.status();
        let _ = resp.bytes().await?;
        if status != 200 {
            bail!("call answered {status}");
        }
        Ok(started.elapsed())
    }

    /// Waits until `slug` answers, then calls it 500 times.
    pub(super) async fn warm_up(&self, slug: &str) -> anyhow::Result<()> {
        let ready = Instant::now() + Duration::from_secs(120);
        while self.call(slug).await.is_err() {
            if Instant::now() > ready {
                bail!("the deployed handler never answered");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..500 {
            self.call(slug).await?;
        }
        Ok(())
    }

    async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.http.delete(format!("{}/api/v1/apis/{id}", self.url)).bearer_auth(&self.token).send().await?;
        Ok(())
    }
}

/// Calls per second over `secs` with `conc` calls in flight, and their latencies.
pub(super) async fn throughput(c: &Arc<Client>, slug: &str, conc: usize, secs: u64) -> anyhow::Result<(f64, usize, Vec<Duration>)> {
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (c, slug) = (c.clone(), slug.to_owned());
        tasks.spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < until {
                match c.call(&slug).await {
                    Ok(d) => lat.push(d),
                    Err(_) => failed += 1,
                }
            }
            (lat, failed)
        });
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    while let Some(r) = tasks.join_next().await {
        let (l, f) = r?;
        all.extend(l);
        failed += f;
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, failed, all))
}

/// Runs the benchmark and prints its report.
pub async fn run(args: InvokeArgs) -> anyhow::Result<()> {
    let (up, url) = target(args.url.as_deref()).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).tcp_nodelay(true).timeout(Duration::from_secs(60)).build()?;
    let token = user(&http, &url, up.as_ref(), 0).await?;
    let c = Arc::new(Client { http, url: url.clone(), token, key: None });

    eprintln!("deploying the handler…");
    let (id, slug) = c.create("bench invoke").await?;
    c.deploy(&id).await?;
    c.warm_up(&slug).await?;

    println!("Souq invoke benchmark: {url}, a trivial Python handler through the edge");
    let mut lat = Vec::with_capacity(args.requests);
    for _ in 0..args.requests {
        lat.push(c.call(&slug).await?);
    }
    lat.sort();
    println!(
        "warm invoke, concurrency 1, {} calls: p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
        lat.len(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.95)),
        ms(percentile(&lat, 0.99))
    );
    for conc in [16, 64] {
        let (rate, failed, lat) = throughput(&c, &slug, conc, args.duration_s).await?;
        println!(
            "throughput, concurrency {conc}, {} s: {rate:.0} calls/s ({failed} failed), p50 {:.2} ms, p99 {:.2} ms",
            args.duration_s,
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );
    }
    c.delete(&id).await?;

    // Deploy to first successful call: a fresh API each time, image cached.
    let mut times = Vec::with_capacity(args.deploys);
    for i in 0..args.deploys {
        let (id, slug) = c.create(&format!("bench deploy {i}")).await?;
        let started = Instant::now();
        c.deploy(&id).await?;
        loop {
            if c.call(&slug).await.is_ok() {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("deploy {i} never answered");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(started.elapsed());
        c.delete(&id).await?;
        // Let the instance go before the next one.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    times.sort();
    println!(
        "deploy to first successful call, {} deploys: p50 {:.0} ms, p99 {:.0} ms",
        times.len(),
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99))
    );
    Ok(())
}
