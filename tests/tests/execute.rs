//! Execute in each runtime on the real Docker Engine: output, exit codes, JSON results,
//! stdin and timeouts.
use serde_json::json;
use souq_tests::TestCluster;

#[tokio::test]
async fn python_stdout_stderr_exit_code_result_and_stdin() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;

    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": "print('hi')"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["stdout"], "hi\n");
    assert_eq!(r["success"], true);
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["timed_out"], false);
    assert_eq!(r["truncated"], false);
    assert!(r["duration_ms"].is_u64());

    let code = "import sys, json\nsys.stderr.write('warn\\n')\nprint(json.dumps({'n': 42, 'ok': True}))\nsys.exit(3)";
    let (_, r) = c.execute(&t, json!({"runtime": "python", "code": code})).await;
    assert_eq!(r["stderr"], "warn\n");
    assert_eq!(r["result"], json!({"n": 42, "ok": true}));
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["success"], false);

    let (_, r) = c.execute(&t, json!({"runtime": "python", "code": "import sys\nprint(sys.stdin.read().upper(), end='')", "stdin": "salam\nworld"})).await;
    assert_eq!(r["stdout"], "SALAM\nWORLD");
    assert_eq!(r["result"], serde_json::Value::Null);
    c.stop().await;
}

#[tokio::test]
async fn node_under_both_names() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    for name in ["nodejs", "node"] {
        let code = "let d='';process.stdin.on('data',c=>d+=c).on('end',()=>{console.log(JSON.stringify({got:d}));console.error('e');process.exit(2)})";
        let (s, r) = c.execute(&t, json!({"runtime": name, "code": code, "stdin": "x"})).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["result"], json!({"got": "x"}), "{r}");
        assert_eq!(r["stderr"], "e\n");
        assert_eq!(r["exit_code"], 2);
    }
    c.stop().await;
}

#[tokio::test]
async fn go_compiles_and_runs_inside_the_sandbox() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let prog = "package main\nimport (\"bufio\";\"fmt\";\"os\")\nfunc main(){s:=bufio.NewScanner(os.Stdin);s.Scan();fmt.Printf(\"{\\\"hello\\\":%q}\\n\", s.Text());fmt.Fprintln(os.Stderr,\"to stderr\");os.Exit(4)}";
    let (s, r) = c.execute(&t, json!({"runtime": "go", "code": prog, "stdin": "souq\n"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["result"], json!({"hello": "souq"}), "{r}");
    assert_eq!(r["stderr"], "to stderr\n");
    assert_eq!(r["exit_code"], 4);

    let (_, r) = c.execute(&t, json!({"runtime": "go", "code": "package main\nfunc main() { undefined() }"})).await;
    assert_ne!(r["exit_code"], 0);
    assert!(r["stderr"].as_str().unwrap().contains("undefined"), "{r}");
    c.stop().await;
}

#[tokio::test]
async fn a_timeout_kills_the_run_and_leaves_nothing() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let forever = [
        ("python", "import time\nprint('started', flush=True)\nwhile True: time.sleep(1)"),
        ("node", "console.log('started'); setInterval(() => {}, 1000)"),
        ("go", "package main\nimport (\"fmt\";\"time\")\nfunc main(){fmt.Println(\"started\");for{time.Sleep(time.Second)}}"),
    ];
    for (runtime, code) in forever {
        let (s, r) = c.execute(&t, json!({"runtime": runtime, "code": code, "timeout_ms": 3000})).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["timed_out"], true, "{runtime}: {r}");
        assert_eq!(r["success"], false);
        assert_eq!(r["stdout"], "started\n", "{runtime}: {r}");
        let ms = r["duration_ms"].as_u64().unwrap();
        assert!((3000..15_000).contains(&ms), "{runtime}: {ms}");
        // Nothing keeps running: the sandbox is gone as soon as the answer is.
        assert!(c.containers().is_empty(), "{runtime}: {:?}", c.containers());
    }
    c.stop().await;
}

#[tokio::test]
async fn output_past_the_limit_is_truncated() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": "import sys\nwhile True: sys.stdout.write('x' * 65536)"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["truncated"], true);
    assert_eq!(r["timed_out"], false);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1024 * 1024);
    c.stop().await;
}
