//! The output cap holds where the user's code cannot reach it: a deployed handler that
//! patches its shim to answer past the cap gets 502 `response-too-large` from the agent,
//! and its instance serves on; a run that floods stdout and stderr from a loop that
//! never yields is cut at the cap, not killed for memory, in every runtime.
#![allow(clippy::unwrap_used)]
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use souq_tests::{TestCluster, attack::assert_healthy};

/// Bytes the patched shim sends for `/big`: four times the default output cap, well
/// under the data path's message limit, so only the cap can refuse it.
const BIG: usize = 4 * 1024 * 1024;

/// A handler that patches its own shim at load: the shim's `Channel.flush` (how every
/// answer leaves) swaps the answer `"BIG"` for a frame of [`BIG`] bytes with the same
/// id, after the shim's own limit check has passed it. Everything else is unchanged, so
/// the channel stays in step.
fn patching_handler() -> String {
    format!(
        r#"
import sys
srv = sys.modules["serve"]
N = {BIG}
plain_flush = srv.Channel.flush

def flush(self):
    out = self.out
    for i in range(1, len(out)):
        if out[i] == b'"BIG"' and b'"len":5,' in out[i - 1]:
            out[i - 1] = out[i - 1].replace(b'"len":5,', b'"len":%d,' % N)
            out[i] = b'"' + b"x" * (N - 2) + b'"'
    return plain_flush(self)

srv.Channel.flush = flush

def handler(event):
    if event["path"] == "/big":
        return "BIG"
    return {{"ok": True, "path": event["path"]}}
"#
    )
}

#[tokio::test]
async fn a_handler_that_goes_around_its_shim_gets_502_response_too_large() {
    let c = TestCluster::builder().start().await;
    let token = c.user().await;
    let api = c.create_api(&token, "Oversized", "python", &patching_handler()).await;
    c.deploy(&token, &api, json!({})).await;
    assert_eq!(c.call_ok(&token, &api, "/warm").await, json!({"ok": true, "path": "/warm"}));

    for round in 0..3 {
        let started = Instant::now();
        let (s, h, p) = c.call(&token, &api, "GET", "/big", &[], Vec::new()).await;
        let took = started.elapsed();
        eprintln!("round {round}: /big answered {s} in {took:?}: {p}");
        assert_eq!(s, 502, "{}", p.to_string().chars().take(300).collect::<String>());
        assert_eq!(h["content-type"], "application/problem+json");
        assert_eq!(p["type"], "urn:souq:problem:response-too-large", "{p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(&BIG.to_string()) && detail.contains("1048576"), "{detail}");
        // The same instance answers the next call at once: nothing restarted.
        let (s, _, r) = c.call(&token, &api, "GET", "/after", &[], Vec::new()).await;
        assert_eq!((s, r), (200, json!({"ok": true, "path": "/after"})));
    }
    let st = c.api_status(&token, &api).await;
    eprintln!("status after the oversized answers: {st}");
    assert_eq!(st["state"], "running", "{st}");
    let restarts: Vec<&Value> = st["instances"].as_array().map(|a| a.iter().map(|i| &i["restarts"]).collect()).unwrap_or_default();
    assert!(restarts.iter().all(|r| **r == 0 || r.is_null()), "{st}");
    // The edge is healthy too.
    assert_eq!(c.http.get(format!("{}/healthz", c.url)).send().await.unwrap().status(), 200);
    c.stop().await;
}

/// stdout and stderr from a loop that never yields, in each runtime. Node's
/// `process.stdout.write` on a pipe queues what the pipe cannot take at once; before the
/// fix this loop filled the run's memory instead and ended in an OOM kill after seconds.
const TIGHT_FLOODS: [(&str, &str); 3] = [
    ("node", "const s='y'.repeat(65536); for(;;){process.stdout.write(s); process.stderr.write(s)}"),
    ("python", "import sys\ns = 'y' * 65536\nwhile True:\n    sys.stdout.write(s)\n    sys.stderr.write(s)"),
    (
        "go",
        "package main\nimport (\"os\";\"strings\")\nfunc main() {\n\ts := []byte(strings.Repeat(\"y\", 65536))\n\tfor {\n\t\tos.Stdout.Write(s)\n\t\tos.Stderr.Write(s)\n\t}\n}",
    ),
];

#[tokio::test]
async fn a_tight_loop_flooding_stdout_and_stderr_is_truncated_not_oom_killed() {
    let c = TestCluster::builder().start().await;
    let t = c.user().await;
    for (runtime, code) in TIGHT_FLOODS {
        let started = Instant::now();
        let (s, r) = c.execute(&t, json!({"runtime": runtime, "code": code, "timeout_ms": 20_000})).await;
        let wall = started.elapsed();
        assert_eq!(s, 200, "{runtime}: {}", r.to_string().chars().take(300).collect::<String>());
        let (out, err) = (r["stdout"].as_str().unwrap().len(), r["stderr"].as_str().unwrap().len());
        eprintln!(
            "{runtime} tight flood: truncated {} oom_killed {} timed_out {} signal {} run {} ms, wall {wall:?}, stdout {out} B + stderr {err} B",
            r["truncated"], r["oom_killed"], r["timed_out"], r["signal"], r["duration_ms"]
        );
        assert_eq!(r["truncated"], true, "{runtime}");
        assert_eq!(r["oom_killed"], false, "{runtime}");
        assert_eq!(r["timed_out"], false, "{runtime}");
        assert_eq!(out + err, 1024 * 1024, "{runtime}");
        // The issue asks for 2 s; a generous bound, since Go compiles first and two tests
        // may share the cores. The figures are printed above.
        assert!(r["duration_ms"].as_u64().unwrap() < 10_000, "{runtime}: {}", r["duration_ms"]);
        assert!(wall < Duration::from_secs(30), "{runtime}: {wall:?}");
    }
    assert_healthy(&c, &t).await;
    c.stop().await;
}
