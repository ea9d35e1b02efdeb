//! Attack suite, escaping the timeout: sleeping for ever, daemons that double-fork,
//! setsid and ignore SIGTERM, and a Go compile that runs past the timeout. After the
//! answer nothing of the run is left on the host.
#![allow(clippy::unwrap_used)]
use serde_json::json;
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, assert_no_process, execute_raw, host_procs, marker, procs_of_container, watching_containers},
};

/// Double fork + setsid; the grandchild ignores SIGTERM and SIGHUP, closes its stdio
/// and becomes `sleep MARKER`. The program waits until the daemon runs, says so, then
/// does TAIL.
const PY_DAEMON: &str = r#"
import os, signal, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv("/bin/sleep", ["sleep", "MARKER"])
    os._exit(0)
os.waitpid(pid, 0)
def running():
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and b"MARKER" in open("/proc/%s/cmdline" % p, "rb").read():
                return p
        except OSError:
            pass
for _ in range(100):
    d = running()
    if d:
        break
    time.sleep(0.02)
print("daemon running as pid", d, "in session", os.getsid(int(d)), flush=True)
TAIL
"#;

#[tokio::test]
async fn sleeping_for_ever_is_cut_at_the_timeout() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let m = marker();
    let code = format!("import os\nprint('sleeping', flush=True)\nos.execv('/bin/sleep', ['sleep', '{m}'])");
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": code, "timeout_ms": 3000})).await;
    assert_eq!(s, 200, "{r}");
    eprintln!("sleep for ever: {}", json!({"timed_out": r["timed_out"], "signal": r["signal"], "exit_code": r["exit_code"], "duration_ms": r["duration_ms"]}));
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["signal"], 9, "{r}");
    assert_eq!(r["stdout"], "sleeping\n");
    assert!((3000..15_000).contains(&r["duration_ms"].as_u64().unwrap()), "{r}");
    assert_no_process(&m);
    assert_healthy(&c, &t).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_ignores_sigterm_dies_with_its_sandbox() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;

    // The program exits 0 at once, leaving its daemon behind.
    let m = marker();
    let code = PY_DAEMON.replace("MARKER", &m).replace("TAIL", "sys.exit(0)");
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": code, "timeout_ms": 10_000})).await;
    assert_eq!(s, 200, "{r}");
    eprintln!("daemon, program exits: {}", json!({"stdout": r["stdout"], "exit_code": r["exit_code"], "timed_out": r["timed_out"], "duration_ms": r["duration_ms"]}));
    assert!(r["stdout"].as_str().unwrap().starts_with("daemon running as pid"), "the daemon never started: {r}");
    assert_eq!((r["exit_code"].as_i64(), r["timed_out"].as_bool()), (Some(0), Some(false)), "{r}");
    assert_no_process(&m);
    assert_healthy(&c, &t).await;

    // The program sleeps past the timeout.
    let m = marker();
    let code = PY_DAEMON.replace("MARKER", &m).replace("TAIL", "time.sleep(3600)");
    let run = {
        let (url, http, t) = (c.url.clone(), c.http.clone(), t.clone());
        tokio::spawn(async move { execute_raw(&url, &http, &t, &json!({"runtime": "python", "code": code, "timeout_ms": 3000})).await })
    };
    // While it runs, the host does see the daemon: the check below can see one left.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = host_procs(&m);
        if !seen.is_empty() || run.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, _, r) = run.await.unwrap();
    assert_eq!(s, 200, "{r}");
    eprintln!("daemon, program sleeps: {}; seen on the host while running: {seen:?}", json!({"stdout": r["stdout"], "timed_out": r["timed_out"], "duration_ms": r["duration_ms"]}));
    assert!(!seen.is_empty(), "the host never saw the daemon");
    assert!(r["stdout"].as_str().unwrap().starts_with("daemon running as pid"), "the daemon never started: {r}");
    assert_eq!(r["timed_out"], true, "{r}");
    assert_no_process(&m);

    // Node: a detached (setsid) shell that traps SIGTERM and SIGHUP, then the program exits.
    let m = marker();
    let code = format!(
        "const {{ spawn }} = require('child_process');\n\
         const d = spawn('/bin/sh', ['-c', \"trap '' TERM HUP; exec sleep {m}\"], {{ detached: true, stdio: 'ignore' }});\n\
         d.unref();\nsetTimeout(() => {{ console.log('daemon pid', d.pid); process.exit(0); }}, 300);"
    );
    let (s, r) = c.execute(&t, json!({"runtime": "node", "code": code, "timeout_ms": 10_000})).await;
    assert_eq!(s, 200, "{r}");
    eprintln!("node detached daemon: {}", json!({"stdout": r["stdout"], "exit_code": r["exit_code"], "duration_ms": r["duration_ms"]}));
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_no_process(&m);
    assert_healthy(&c, &t).await;
    c.stop().await;
}

/// A `package main` whose compile alone takes a few seconds (one long function).
fn slow_to_compile() -> String {
    let mut body = String::new();
    for i in 1..5000u32 {
        body.push_str(&format!("v{i}:=v{}*{}+{i}\nif v{i}%3==0{{v{i}+=v{}}}\n", i - 1, i % 7 + 2, i.saturating_sub(5)));
    }
    format!("package main\nimport \"fmt\"\nfunc f(v0 int) int {{\n{body}return v4999\n}}\nfunc main() {{ fmt.Println(f(1)) }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_compile_is_bounded_by_the_same_timeout() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let cases = [
        ("a plain program, timeout 400 ms", "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"ran\") }".to_owned(), 400),
        ("a slow compile, timeout 1500 ms", slow_to_compile(), 1500),
    ];
    for (what, code, timeout_ms) in cases {
        assert!(code.len() < 256 * 1024);
        let ((s, r), seen) =
            watching_containers(&c, c.execute(&t, json!({"runtime": "go", "code": code, "timeout_ms": timeout_ms}))).await;
        assert_eq!(s, 200, "{r}");
        eprintln!("go, {what}: {}", json!({"timed_out": r["timed_out"], "stdout": r["stdout"], "duration_ms": r["duration_ms"], "containers seen": seen}));
        assert_eq!(r["timed_out"], true, "{what}: {r}");
        assert_eq!(r["stdout"], "", "{what}: the program ran: {r}");
        assert!(r["duration_ms"].as_u64().unwrap() < u64::try_from(timeout_ms).unwrap() + 5000, "{what}: {r}");
        assert!(!seen.is_empty(), "{what}: no sandbox seen");
        for id in &seen {
            let left = procs_of_container(id);
            assert!(left.is_empty(), "{what}: processes of sandbox {id} left: {left:?}");
        }
        assert!(c.containers().is_empty(), "{what}");
    }
    // The slow program does compile and run when given the time.
    let (s, r) = c.execute(&t, json!({"runtime": "go", "code": slow_to_compile(), "timeout_ms": 30_000})).await;
    assert_eq!((s, r["exit_code"].as_i64()), (200, Some(0)), "{r}");
    eprintln!("go, the slow compile with time: {} ms", r["duration_ms"]);
    assert_healthy(&c, &t).await;
    c.stop().await;
}
