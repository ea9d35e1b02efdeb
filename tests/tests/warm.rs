//! Warm execution: sandboxes wait in a pool; a user's runs reuse that user's sandbox,
//! each in a fresh process; nothing crosses from one user's run to another's.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use souq_tests::TestCluster;

/// Reports the run's view of its sandbox, and leaves traces behind: a file in /tmp and
/// in its run dir, an environment variable, a global, a background process, and a
/// marker in its memory.
const PROBE: &str = r#"
import json, os, socket, subprocess
seen = {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "tmp": sorted(os.listdir("/tmp")),
    "cwd": sorted(os.listdir(".")),
    "env": sorted(os.environ),
    "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "global": "LEFT_BEHIND" in globals(),
}
LEFT_BEHIND = "x" * 1000 + "MARKER"
open("/tmp/left-in-tmp", "w").write("MARKER")
open("left-in-cwd", "w").write("MARKER")
os.environ["LEFT_ENV"] = "MARKER"
subprocess.Popen(["sleep", "300"], start_new_session=True)
print(json.dumps(seen))
"#;

async fn probe(c: &TestCluster, token: &str) -> Value {
    let (s, r) = c.execute(token, json!({"runtime": "python", "code": PROBE})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    r["result"].clone()
}

/// Waits until `n` containers of the cluster exist.
async fn containers(c: &TestCluster, n: usize) -> Vec<String> {
    for _ in 0..300 {
        let now = c.containers();
        if now.len() == n {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} containers, have {:?}", c.containers());
}

#[tokio::test]
async fn a_users_runs_reuse_their_sandbox_each_in_a_fresh_process() {
    let c = TestCluster::builder().warm(1, 100).start().await;
    // One waiting sandbox per runtime.
    containers(&c, 3).await;
    let a = c.unverified_user().await;
    let first = probe(&c, &a).await;
    // The pool refills behind the sandbox the user took.
    containers(&c, 4).await;
    let second = probe(&c, &a).await;
    assert_eq!(first["host"], second["host"], "the same user keeps the same sandbox");
    assert_ne!(first["pid"], second["pid"], "each run is a fresh process");
    assert_eq!(second["global"], false, "no memory from the earlier run");
    assert!(!strs(&second["env"]).contains(&"LEFT_ENV".to_owned()), "no environment from the earlier run");
    assert!(!strs(&second["cwd"]).contains(&"left-in-cwd".to_owned()), "a fresh run dir");
    // The earlier run's background `sleep` is gone: the same processes as before.
    assert_eq!(first["procs"].as_array().unwrap().len(), second["procs"].as_array().unwrap().len(), "{first} {second}");
    // The user's own /tmp outside the run dir is theirs across runs.
    assert!(strs(&second["tmp"]).contains(&"left-in-tmp".to_owned()));
    c.stop().await;
}

#[tokio::test]
async fn nothing_crosses_from_one_users_run_to_anothers() {
    let c = TestCluster::builder().warm(1, 100).start().await;
    containers(&c, 3).await;
    let (a, b) = (c.unverified_user().await, c.unverified_user().await);
    let seen_by_a = probe(&c, &a).await;
    let seen_by_b = probe(&c, &b).await;
    assert_ne!(seen_by_a["host"], seen_by_b["host"], "two users never share a sandbox");
    for (what, v) in [("tmp", &seen_by_b["tmp"]), ("cwd", &seen_by_b["cwd"]), ("env", &seen_by_b["env"])] {
        assert!(!v.to_string().contains("left") && !v.to_string().contains("LEFT"), "{what} of B shows A's traces: {v}");
    }
    assert_eq!(seen_by_b["global"], false);
    // B looks for A's marker everywhere it can read: its files, its processes' command
    // lines and environments.
    let search = r#"
import os
needle = b"MAR" + b"KER"  # not spelled out, so this program does not find itself
hits = []
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root.startswith(("/proc", "/sys", "/usr", "/dev")):
        dirs[:] = []
        continue
    for f in files:
        try:
            if needle in open(os.path.join(root, f), "rb").read(1 << 20):
                hits.append(os.path.join(root, f))
        except OSError:
            pass
for p in os.listdir("/proc"):
    if p.isdigit():
        for part in ("cmdline", "environ"):
            try:
                if needle in open(f"/proc/{p}/{part}", "rb").read():
                    hits.append(f"/proc/{p}/{part}")
            except OSError:
                pass
print(hits)
"#;
    let (_, r) = c.execute(&b, json!({"runtime": "python", "code": search})).await;
    // B's own earlier probe left its marker in B's /tmp; A's never shows up elsewhere.
    assert_eq!(r["stdout"], "['/tmp/left-in-tmp']\n", "{r}");
    c.stop().await;
}

#[tokio::test]
async fn an_abnormal_run_retires_the_sandbox() {
    let c = TestCluster::builder().warm(1, 100).start().await;
    containers(&c, 3).await;
    let a = c.unverified_user().await;
    let before = probe(&c, &a).await;
    let (_, r) = c.execute(&a, json!({"runtime": "python", "code": "while True: pass", "timeout_ms": 1000})).await;
    assert_eq!(r["timed_out"], true, "{r}");
    let after = probe(&c, &a).await;
    assert_ne!(before["host"], after["host"], "a timed-out sandbox is not used again");
    assert!(!strs(&after["tmp"]).contains(&"left-in-tmp".to_owned()));
    c.stop().await;
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}
