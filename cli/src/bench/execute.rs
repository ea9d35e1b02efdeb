//! `souq bench execute`: latency and throughput of one-shot executes through the whole
//! stack (REST edge → control plane → agent → sandbox), with the `docker run --rm`
//! baseline measured in the same run.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::{ms, percentile, target, user};

/// Options of `souq bench execute`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A running edge to measure, e.g. http://127.0.0.1:8080; without it, a `souq up` is
    /// started for the run.
    #[arg(long)]
    pub url: Option<String>,
    /// Requests per latency series.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Seconds of each sustained-throughput run.
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
    /// `docker run --rm` runs for the baseline.
    #[arg(long, default_value_t = 20)]
    pub baseline_runs: usize,
}

async fn execute(http: &reqwest::Client, url: &str, token: &str, runtime: &str, code: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let resp = http
        .post(format!("{url}/api/v1/execute"))
        .bearer_auth(token)
        .json(&json!({"runtime": runtime, "code": code}))
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    let took = started.elapsed();
    if !status.is_success() || body["success"] != true {
        bail!("execute failed: {status} {body}");
    }
    Ok(took)
}

/// `workers` tasks, each with its own token, share `total` requests; returns latencies.
async fn latency(http: &reqwest::Client, url: &str, tokens: &[String], runtime: &str, code: &str, total: usize) -> anyhow::Result<Vec<Duration>> {
    let per = total.div_ceil(tokens.len());
    let mut tasks = tokio::task::JoinSet::new();
    for t in tokens {
        let (http, url, t, runtime, code) = (http.clone(), url.to_owned(), t.clone(), runtime.to_owned(), code.to_owned());
        tasks.spawn(async move {
            let mut v = Vec::with_capacity(per);
            for _ in 0..per {
                v.push(execute(&http, &url, &t, &runtime, &code).await?);
            }
            anyhow::Ok(v)
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    all.sort();
    Ok(all)
}

/// Executes per second over `secs`, with `workers` concurrent loops per token.
async fn throughput(http: &reqwest::Client, url: &str, tokens: &[String], workers: usize, secs: u64) -> anyhow::Result<(f64, usize)> {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for t in tokens {
        for _ in 0..workers {
            let (http, url, t) = (http.clone(), url.to_owned(), t.clone());
            tasks.spawn(async move {
                let (mut ok, mut failed) = (0usize, 0usize);
                while Instant::now() < until {
                    match execute(&http, &url, &t, "python", "print('hi')").await {
                        Ok(_) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            });
        }
    }
    let started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (o, f) = r?;
        ok += o;
        failed += f;
    }
    Ok((ok as f64 / started.elapsed().as_secs_f64(), failed))
}

/// p50 of `docker run --rm` of `image` running `code` with the seed's limits.
fn baseline(image: &str, code: &str, runs: usize) -> anyhow::Result<Duration> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        // One request to the shim, then end of input: it answers and exits.
        let frame = format!(
            "{{\"v\":1,\"id\":1,\"code_len\":{},\"stdin_len\":0,\"timeout_ms\":30000,\"output_limit\":1048576}}\n{code}",
            code.len()
        );
        let started = Instant::now();
        let mut child = Command::new("docker")
            .args(["run", "--rm", "-i", "--network", "none", "--memory", "256m", "--memory-swap", "256m"])
            .args(["--cpus", "0.5", "--pids-limit", "50", "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m"])
            .args(["--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--user", "65534:65534", image])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("docker run")?;
        use std::io::Write;
        child.stdin.take().context("stdin")?.write_all(frame.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("docker run failed: {status}");
        }
        v.push(started.elapsed());
    }
    v.sort();
    Ok(percentile(&v, 0.5))
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (up, url) = target(args.url.as_deref()).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).timeout(Duration::from_secs(60)).build()?;
    let mut tokens = Vec::new();
    for i in 0..8 {
        tokens.push(user(&http, &url, up.as_ref(), i).await?);
    }
    let programs = [("python", "print('hi')"), ("nodejs", "console.log('hi')")];
    eprintln!("warming up…");
    for (rt, code) in programs {
        latency(&http, &url, &tokens, rt, code, 16).await?;
    }

    let dir = std::env::temp_dir().join(format!("souq-bench-runtimes-{}", std::process::id()));
    souq_node_agent::images::write_sources(&dir)?;
    let images = souq_node_agent::images::tags(&dir).await?;
    let _ = std::fs::remove_dir_all(&dir);

    println!("Souq execute benchmark: {url}, {} requests per series", args.requests);
    println!("{:<8} {:>5} {:>9} {:>9} {:>9} {:>16} {:>7}", "runtime", "conc", "p50 ms", "p95 ms", "p99 ms", "docker run p50", "ratio");
    for (rt, code) in programs {
        let image = images.get(&rt.parse()?).context("image")?;
        let base = tokio::task::spawn_blocking({
            let (image, code, runs) = (image.clone(), code.to_owned(), args.baseline_runs);
            move || baseline(&image, &code, runs)
        })
        .await??;
        for conc in [1usize, 8] {
            let lat = latency(&http, &url, &tokens[..conc], rt, code, args.requests).await?;
            let p50 = percentile(&lat, 0.5);
            println!(
                "{rt:<8} {conc:>5} {:>9.2} {:>9.2} {:>9.2} {:>13.1} ms {:>7.3}",
                ms(p50),
                ms(percentile(&lat, 0.95)),
                ms(percentile(&lat, 0.99)),
                ms(base),
                ms(p50) / ms(base)
            );
        }
    }
    let (one, f1) = throughput(&http, &url, &tokens[..1], 4, args.duration_s).await?;
    println!("sustained python executes/s over {} s, 1 user (4 in flight): {one:.1} ({f1} failed)", args.duration_s);
    let (eight, f8) = throughput(&http, &url, &tokens, 1, args.duration_s).await?;
    println!("sustained python executes/s over {} s, 8 users (1 in flight each): {eight:.1} ({f8} failed)", args.duration_s);
    Ok(())
}
