//! Helpers of the sandbox attack suite (`tests/tests/attacks_*.rs`): host-side probes
//! (processes, disk, memory, addresses) and the health check every attack ends with.
use std::{
    future::Future,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::TestCluster;

/// A number unique to this call, e.g. for `sleep <marker>`: no other host process
/// carries it in its command line.
pub fn marker() -> String {
    format!("987654{:09}", Uuid::new_v4().as_u128() % 1_000_000_000)
}

/// Host processes (pid and command line) whose command line contains `needle`.
pub fn host_procs(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{pid}: {}", cmd.trim_end()));
        }
    }
    found
}

/// Host processes that live in the cgroup of container `id` (a short or full id).
pub fn procs_of_container(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cg) = std::fs::read_to_string(entry.path().join("cgroup")) else { continue };
        if cg.contains(&format!("docker/{id}")) || cg.contains(&format!("docker-{id}")) {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!("{pid}: {}", String::from_utf8_lossy(&cmd).replace('\0', " ").trim_end()));
        }
    }
    found
}

/// Runs `run` while polling this cluster's containers every 50 ms; returns its output
/// and every container id seen meanwhile. Needs a multi-thread runtime.
pub async fn watching_containers<T>(c: &TestCluster, run: impl Future<Output = T>) -> (T, Vec<String>) {
    let nodes = c.nodes.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let poll = tokio::task::spawn_blocking(move || {
        let mut seen: Vec<String> = Vec::new();
        while !s.is_cancelled() {
            for id in nodes.iter().flat_map(|n| crate::containers_of(n)) {
                if !seen.contains(&id) {
                    seen.push(id);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    });
    let out = run.await;
    stop.cancel();
    (out, poll.await.unwrap())
}

/// Resident memory of this test process in KiB (the agent runs in it).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The Docker Engine's root directory (`/var/lib/docker` by default).
pub fn docker_root_dir() -> String {
    let out = Command::new("docker").args(["info", "-f", "{{.DockerRootDir}}"]).output().unwrap();
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if dir.is_empty() { "/var/lib/docker".into() } else { dir }
}

/// Disk space used under `dir` in KiB (`du -skx`), which unlike `df` ignores what
/// other programs write elsewhere on the same file system.
pub fn disk_used_kib(dir: &str) -> u64 {
    let out = Command::new("du").args(["-skx", dir]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
}

/// Used KiB of the file system holding `dir` (`df`).
pub fn df_used_kib(dir: &str) -> u64 {
    let out = Command::new("df").args(["-k", "--output=used", dir]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}

/// The host's primary IPv4 address: the first global address of the interface that
/// carries the default route (read from the routing table; no packet is sent).
pub fn host_ipv4() -> String {
    let route = Command::new("ip").args(["-4", "route", "show", "default"]).output().unwrap();
    let route = String::from_utf8_lossy(&route.stdout).into_owned();
    let mut words = route.split_whitespace();
    let dev = words.find(|w| *w == "dev").and_then(|_| words.next()).unwrap_or_else(|| panic!("no default route: {route:?}"));
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", dev, "scope", "global"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "inet")
        .and_then(|_| words.next())
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no global IPv4 address on {dev}: {text:?}"))
        .to_owned()
}

/// The docker0 bridge's gateway address.
pub fn docker0_ipv4() -> String {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "docker0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "inet")
        .and_then(|_| words.next())
        .and_then(|a| a.split('/').next())
        .map_or_else(|| "172.17.0.1".to_owned(), str::to_owned)
}

/// The port of an `http://host:port` URL.
pub fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

/// POSTs an execute; returns the status, the `Retry-After` header and the body.
pub async fn execute_raw(url: &str, http: &reqwest::Client, token: &str, body: &Value) -> (u16, Option<String>, Value) {
    let resp = http.post(format!("{url}/api/v1/execute")).bearer_auth(token).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    (status, retry, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Runs a snippet that must succeed; returns its stdout parsed as JSON.
pub async fn run_json(c: &TestCluster, token: &str, runtime: &str, code: &str, stdin: &str) -> Value {
    let (s, r) = c.execute(token, json!({"runtime": runtime, "code": code, "stdin": stdin, "timeout_ms": 20_000})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["exit_code"], 0, "{runtime}: {r}");
    assert!(r["result"].is_object(), "{runtime}: stdout is not a JSON object: {r}");
    r["result"].clone()
}

/// After an attack: a normal execute still succeeds promptly and no container is left.
pub async fn assert_healthy(c: &TestCluster, token: &str) {
    let started = Instant::now();
    let (s, r) = c.execute(token, json!({"runtime": "python", "code": "print('ok')"})).await;
    assert_eq!(s, 200, "health execute: {r}");
    assert_eq!((r["stdout"].as_str(), r["exit_code"].as_i64()), (Some("ok\n"), Some(0)), "health execute: {r}");
    // A generous bound: two tests share two cores; a normal run takes about a second.
    assert!(started.elapsed() < Duration::from_secs(20), "health execute took {:?}", started.elapsed());
    assert!(c.containers().is_empty(), "containers left: {:?}", c.containers());
}

/// Asserts that no host process carries `marker` in its command line.
pub fn assert_no_process(marker: &str) {
    let left = host_procs(marker);
    assert!(left.is_empty(), "processes left running on the host: {left:?}");
}
