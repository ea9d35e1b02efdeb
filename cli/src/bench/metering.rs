//! `souq bench metering`: what metering and rate limiting cost. The same warm-invoke
//! throughput run (a consumer calling a published API with an API key under a plan)
//! against a `souq up` with metering off, then on in memory (the embedded default), then
//! on with Redis when a Redis URL is given: each started fresh, in one run.
use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::{
    Up,
    invoke::{Client, throughput},
    start_up, user,
};

/// Options of `souq bench metering`.
#[derive(Debug, Args)]
pub struct MeteringArgs {
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 15)]
    pub duration_s: u64,
    /// Also measure with metering and limits in this Redis, e.g. redis://127.0.0.1:6379.
    #[arg(long, env = "SOUQ_REDIS_URL")]
    pub redis_url: Option<String>,
}

async fn signed_up(http: &reqwest::Client, url: &str, email: &str) -> anyhow::Result<String> {
    let creds = json!({"email": email, "password": "bench password 123"});
    http.post(format!("{url}/api/v1/auth/signup")).json(&creds).send().await?;
    let login: Value = http.post(format!("{url}/api/v1/auth/login")).json(&creds).send().await?.json().await?;
    login["access_token"].as_str().map(str::to_owned).context("login failed")
}

/// Publishes an API with a roomy plan and returns a consumer client with a key for it.
async fn consumer(http: &reqwest::Client, up: &Up, url: &str) -> anyhow::Result<(Arc<Client>, String)> {
    let email = format!("provider-{}@example.com", uuid::Uuid::new_v4().simple());
    let provider = signed_up(http, url, &email).await?;
    super::verify(http, up, &email).await?;
    let owner = Client { http: http.clone(), url: url.to_owned(), token: provider.clone(), key: None };
    let (id, slug) = owner.create("bench metering").await?;
    let auth = format!("Bearer {provider}");
    let r = http.patch(format!("{url}/api/v1/apis/{id}")).header("authorization", &auth).json(&json!({"public": true})).send().await?;
    if !r.status().is_success() {
        bail!("publishing failed: {}", r.text().await?);
    }
    let plan = json!({"name": "bench", "price_minor": 0, "currency": "USD", "monthly_quota": 1_000_000_000u64, "rate_limit_per_minute": 10_000_000});
    http.post(format!("{url}/api/v1/apis/{id}/plans")).header("authorization", &auth).json(&plan).send().await?.error_for_status()?;
    owner.deploy(&id).await?;

    let token = user(http, url, Some(up), 1).await?;
    let key: Value = http.post(format!("{url}/api/v1/keys")).bearer_auth(&token).json(&json!({"name": "bench"})).send().await?.json().await?;
    let key = key["key"].as_str().context("no key")?.to_owned();
    http.post(format!("{url}/api/v1/marketplace/{slug}/subscribe"))
        .bearer_auth(&token)
        .json(&json!({"plan": "bench"}))
        .send()
        .await?
        .error_for_status()?;
    let c = Arc::new(Client { http: http.clone(), url: url.to_owned(), token, key: Some(key) });
    c.warm_up(&slug).await?;
    Ok((c, slug))
}

/// Runs the benchmark and prints its report.
pub async fn run(args: MeteringArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(128).tcp_nodelay(true).timeout(Duration::from_secs(60)).build()?;
    let mut configs: Vec<(&str, Vec<String>)> =
        vec![("off", vec!["--metering".into(), "off".into()]), ("on, in memory", Vec::new())];
    if let Some(r) = &args.redis_url {
        configs.push(("on, Redis", vec!["--redis-url".into(), r.clone()]));
    }
    println!("Souq metering benchmark: calls with an API key under a plan, {} s per run", args.duration_s);
    let mut base: Option<(f64, f64)> = None;
    for (name, extra) in configs {
        eprintln!("starting souq up with metering {name}…");
        let (up, url) = tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            start_up(&extra)
        })
        .await??;
        let (c, slug) = consumer(&http, &up, &url).await?;
        let (r16, f16, _) = throughput(&c, &slug, 16, args.duration_s).await?;
        let (r64, f64_, _) = throughput(&c, &slug, 64, args.duration_s).await?;
        let cost = |now: f64, off: f64| 100.0 * (off - now) / off;
        match base {
            None => {
                println!("metering {name:<14} concurrency 16: {r16:>6.0}/s ({f16} failed)   concurrency 64: {r64:>6.0}/s ({f64_} failed)");
                base = Some((r16, r64));
            }
            Some((b16, b64)) => println!(
                "metering {name:<14} concurrency 16: {r16:>6.0}/s ({f16} failed, cost {:+.1} %)   concurrency 64: {r64:>6.0}/s ({f64_} failed, cost {:+.1} %)",
                cost(r16, b16),
                cost(r64, b64)
            ),
        }
        drop(up);
    }
    Ok(())
}
