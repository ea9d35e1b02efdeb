//! Attack suite, input and output: endless stdout and stderr are cut at the output
//! limit promptly with the agent's memory flat, and stdin floods are read back whole or
//! refused at the body limit.
#![allow(clippy::unwrap_used)]
use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::json;
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, rss_kib, run_json},
};

const FLOODS: [(&str, &str); 5] = [
    ("python", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"),
    ("python", "import sys\nwhile True:\n    sys.stderr.write('e' * 65536)"),
    ("python", "import os\nwhile True:\n    os.write(1, b'o' * 4096)\n    os.write(2, b'e' * 4096)"),
    ("node", "const fs = require('fs'); const b = Buffer.alloc(65536, 'x'); for (;;) fs.writeSync(1, b);"),
    ("node", "const fs = require('fs'); const b = Buffer.alloc(65536, 'e'); for (;;) fs.writeSync(2, b);"),
];

#[tokio::test]
async fn endless_output_is_truncated_promptly_and_agent_memory_stays_flat() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    // One ordinary run first, so the baseline includes the allocator's warm-up.
    assert_healthy(&c, &t).await;
    let before = rss_kib();
    for (runtime, code) in FLOODS {
        let (s, r) = c.execute(&t, json!({"runtime": runtime, "code": code, "timeout_ms": 20_000})).await;
        assert_eq!(s, 200, "{runtime}: {}", r.to_string().chars().take(300).collect::<String>());
        let (out, err) = (r["stdout"].as_str().unwrap().len(), r["stderr"].as_str().unwrap().len());
        eprintln!(
            "{runtime} flood {:?}: truncated {} timed_out {} signal {} {} ms, stdout {out} B, stderr {err} B, rss {} KiB",
            code.chars().take(40).collect::<String>(),
            r["truncated"],
            r["timed_out"],
            r["signal"],
            r["duration_ms"],
            rss_kib()
        );
        assert_eq!(r["truncated"], true, "{runtime}: {code}");
        assert_eq!(r["timed_out"], false, "{runtime}: {code}");
        assert_eq!(out + err, 1024 * 1024, "{runtime}: {code}");
        // Answered well before the timeout (20 s): the cap, not the clock, ended it.
        assert!(r["duration_ms"].as_u64().unwrap() < 10_000, "{runtime}: {}", r["duration_ms"]);
    }
    // process.stdout.write in a loop that never yields: Node would queue what the pipe
    // cannot take in the run's memory, so the shim makes the run's stdout and stderr
    // write synchronously, and the cap ends it like the others (output_cap.rs has the
    // same with stderr too, in every runtime).
    let code = "const b = 'x'.repeat(65536); for (;;) process.stdout.write(b);";
    let (s, r) = c.execute(&t, json!({"runtime": "node", "code": code, "timeout_ms": 5000})).await;
    assert_eq!(s, 200);
    let out = r["stdout"].as_str().unwrap().len();
    eprintln!(
        "node process.stdout.write flood: truncated {} oom_killed {} timed_out {} exit {} {} ms, stdout {out} B",
        r["truncated"], r["oom_killed"], r["timed_out"], r["exit_code"], r["duration_ms"]
    );
    assert_eq!((&r["truncated"], &r["oom_killed"]), (&json!(true), &json!(false)), "{}", r.to_string().chars().take(300).collect::<String>());
    assert_eq!(out, 1024 * 1024);
    assert!(r["duration_ms"].as_u64().unwrap() < 10_000, "{}", r["duration_ms"]);
    let grew = rss_kib().saturating_sub(before);
    eprintln!("test process RSS: {before} KiB before, grew {grew} KiB over {} floods", FLOODS.len() + 1);
    assert!(grew < 64 * 1024, "the agent's memory grew by {grew} KiB");
    assert_healthy(&c, &t).await;
    c.stop().await;
}

/// Prints the length and SHA-256 of all of stdin, in each runtime.
const ECHO_HASH: [(&str, &str); 3] = [
    (
        "python",
        "import hashlib, json, sys\nd = sys.stdin.buffer.read()\nprint(json.dumps({'len': len(d), 'sha256': hashlib.sha256(d).hexdigest()}))",
    ),
    (
        "node",
        "const c = require('crypto'); const d = require('fs').readFileSync(0); console.log(JSON.stringify({len: d.length, sha256: c.createHash('sha256').update(d).digest('hex')}));",
    ),
    (
        "go",
        "package main\nimport (\"crypto/sha256\";\"fmt\";\"io\";\"os\")\nfunc main() {\n\td, _ := io.ReadAll(os.Stdin)\n\tfmt.Printf(\"{\\\"len\\\": %d, \\\"sha256\\\": \\\"%x\\\"}\\n\", len(d), sha256.Sum256(d))\n}",
    ),
];

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned()
}

#[tokio::test]
async fn stdin_floods_are_read_whole_or_refused_at_the_body_limit() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let limit = souq_edge_proxy::MAX_BODY_BYTES;

    // Just under the body limit: every byte reaches the program, in each runtime.
    // (JSON spells each newline in two bytes.)
    let mut stdin = String::new();
    let mut i = 0u64;
    while stdin.len() + stdin.matches('\n').count() < limit - 2048 {
        stdin.push_str(&format!("{i:08x} souq stdin flood line\n"));
        i += 1;
    }
    let want = sha256_hex(stdin.as_bytes());
    for (runtime, code) in ECHO_HASH {
        let body = json!({"runtime": runtime, "code": code, "stdin": stdin, "timeout_ms": 20_000});
        assert!(serde_json::to_vec(&body).unwrap().len() < limit);
        let r = run_json(&c, &t, runtime, code, &stdin).await;
        eprintln!("{runtime}: stdin of {} bytes read back as {r}", stdin.len());
        assert_eq!(r["len"], stdin.len(), "{runtime}");
        assert_eq!(r["sha256"], want.as_str(), "{runtime}");
    }

    // A program that never reads its flood is not held up by it.
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": "print('ignored')", "stdin": stdin})).await;
    assert_eq!((s, r["stdout"].as_str(), r["exit_code"].as_i64()), (200, Some("ignored\n"), Some(0)), "{r}");

    // Over the limit: refused before anything runs.
    let over = "y".repeat(limit + 1);
    let (s, p) = c.execute(&t, json!({"runtime": "python", "code": "print(1)", "stdin": over})).await;
    assert_eq!(s, 413, "{p}");
    assert_eq!(p["type"], "urn:souq:problem:payload-too-large", "{p}");
    assert!(c.containers().is_empty());
    assert_healthy(&c, &t).await;
    c.stop().await;
}
