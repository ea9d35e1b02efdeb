//! `souq bench`: benchmarks through the whole stack, against a `souq up` started for the
//! run (or a running edge). Shared here: starting it, users, percentiles.
pub mod execute;
pub mod invoke;
pub mod logins;
pub mod metering;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context;
use serde_json::{Value, json};

/// A `souq up` started for the benchmark, stopped when dropped.
pub struct Up {
    child: Child,
    /// Its data dir (mail is written under `mail/` there).
    pub dir: std::path::PathBuf,
}

impl Up {
    /// The process id of this `souq up`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `souq up` with `extra` options in a fresh data dir; returns it and its URL.
pub fn start_up(extra: &[&str]) -> anyhow::Result<(Up, String)> {
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("souq-bench-{}-{n}", std::process::id()));
    let mut child = Command::new(std::env::current_exe()?)
        .args(["up", "--edge-addr", "127.0.0.1:0", "--node-name", &format!("bench-{}-{n}", std::process::id())])
        .arg("--data-dir")
        .arg(&dir)
        .args(extra)
        .env("SOUQ_LOG", "warn,tower_http=off")
        .stdout(Stdio::piped())
        .spawn()
        .context("start souq up")?;
    let stdout = child.stdout.take().context("souq up stdout")?;
    let up = Up { child, dir };
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("edge listening on "))
        .context("souq up stopped before it was ready")?;
    Ok((up, line.trim_start_matches("edge listening on ").to_owned()))
}

/// Signs up bench user `i`, verifies the address from the mail of `up` (the benchmark's
/// own `souq up`: an unverified account may not deploy), and logs in; returns the access
/// token.
pub async fn user(http: &reqwest::Client, url: &str, up: Option<&Up>, i: usize) -> anyhow::Result<String> {
    let email = format!("bench-{}-{i}-{}@example.com", std::process::id(), uuid::Uuid::new_v4().simple());
    let creds = json!({"email": email, "password": "bench password 123"});
    http.post(format!("{url}/api/v1/auth/signup")).json(&creds).send().await?;
    if let Some(up) = up {
        verify(http, up, &email).await?;
    }
    let login: Value = http.post(format!("{url}/api/v1/auth/login")).json(&creds).send().await?.json().await?;
    login["access_token"].as_str().map(str::to_owned).context("login failed")
}

/// Follows the verification link mailed (as a file) to `email` by the `souq up` in `up`.
pub async fn verify(http: &reqwest::Client, up: &Up, email: &str) -> anyhow::Result<()> {
    let dir = up.dir.join("mail");
    for _ in 0..100 {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default().replace("=\r\n", "").replace("=\n", "");
            if !text.contains(email) {
                continue;
            }
            if let Some(start) = text.find("http://") {
                let link: String = text[start..].chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<').collect();
                if link.contains("/verify-email/") {
                    http.get(&link).send().await?.error_for_status()?;
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no verification mail for {email} under {}", dir.display())
}

/// The edge to measure: `url`, or a `souq up` started now (kept alive by the guard).
pub async fn target(url: Option<&str>) -> anyhow::Result<(Option<Up>, String)> {
    match url {
        Some(u) => Ok((None, u.trim_end_matches('/').to_owned())),
        None => {
            eprintln!("starting souq up for the benchmark…");
            let (up, url) = tokio::task::spawn_blocking(|| start_up(&[])).await??;
            Ok((Some(up), url))
        }
    }
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Milliseconds, fractional.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

