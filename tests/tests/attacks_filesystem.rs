//! Attack suite, filesystem: symlinks planted where the shims write (and where an agent
//! might read results) reach nothing on the host and are gone by the next run, and one
//! user's files, input, output and processes are invisible to another user's run.
#![allow(clippy::unwrap_used)]
use std::{path::PathBuf, time::SystemTime};

use serde_json::{Value, json};
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, assert_no_process, execute_raw, host_procs, marker, run_json},
};
use uuid::Uuid;

/// Plants symlinks under the names the shims use (and a few an agent could read), aimed
/// at the host paths on stdin; swaps /tmp/souq itself for a link; writes through the
/// links; tries to run a binary from /tmp. Then TAIL.
const PY_PLANT: &str = r#"
import errno, json, os, shutil, sys, time
targets = json.loads(sys.stdin.read())
names = ["main.py", "main.js", "main.go", "stdin", "prog", "gocache", "gopath", "result", "result.json",
         "output", "stdout", "stderr", "exit_code", "code", "input"]
res = {"planted": [], "errors": {}, "writes": {}}
for d in ["/tmp", "/tmp/souq"]:
    for i, n in enumerate(names):
        p = os.path.join(d, n)
        try:
            if os.path.lexists(p):
                os.unlink(p)
            os.symlink(targets[i % len(targets)], p)
            res["planted"].append(p)
        except OSError as e:
            res["errors"][p] = errno.errorcode.get(e.errno, "?")
os.rename("/tmp/souq", "/tmp/souq.old")
os.symlink(os.path.dirname(targets[0]), "/tmp/souq")
res["planted"].append("/tmp/souq")
os.makedirs(os.path.dirname(targets[0]), exist_ok=True)  # inside the sandbox only
for p in ["/tmp/main.py", "/tmp/souq.old/stdin", "/tmp/souq/canary.txt"]:
    try:
        with open(p, "a") as f:
            f.write("pwned by the sandbox\n")
        res["writes"][p] = "ok (inside the sandbox)"
    except OSError as e:
        res["writes"][p] = errno.errorcode.get(e.errno, "?")
shutil.copy("/usr/bin/true", "/tmp/true")
os.chmod("/tmp/true", 0o755)
try:
    os.execv("/tmp/true", ["true"])
except OSError as e:
    res["exec from /tmp"] = errno.errorcode.get(e.errno, "?")
print(json.dumps(res), flush=True)
TAIL
"#;

/// Lists everything under /tmp and /dev/shm with its type, and reads its own stdin.
const PY_LOOK: &str = r#"
import json, os, stat, sys
seen = {}
for top in ["/tmp", "/dev/shm"]:
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            m = os.lstat(p).st_mode
            seen[p] = "link -> " + os.readlink(p) if stat.S_ISLNK(m) else "dir" if stat.S_ISDIR(m) else "file"
print(json.dumps({"seen": seen, "stdin": sys.stdin.read()}))
"#;

const NODE_LOOK: &str = r#"
const fs = require('fs'), path = require('path');
const seen = {};
const walk = d => { for (const n of fs.readdirSync(d)) { const p = path.join(d, n); const s = fs.lstatSync(p);
  seen[p] = s.isSymbolicLink() ? 'link -> ' + fs.readlinkSync(p) : s.isDirectory() ? 'dir' : 'file'; if (s.isDirectory()) walk(p); } };
walk('/tmp'); walk('/dev/shm');
console.log(JSON.stringify({ seen, stdin: fs.readFileSync(0, 'utf8') }));
"#;

const GO_LOOK: &str = r#"package main

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

func main() {
	seen := map[string]string{}
	for _, top := range []string{"/tmp", "/dev/shm"} {
		filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == top {
				return nil
			}
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				t, _ := os.Readlink(p)
				seen[p] = "link -> " + t
			case d.IsDir():
				seen[p] = "dir"
			default:
				seen[p] = "file"
			}
			return nil
		})
	}
	in, _ := io.ReadAll(os.Stdin)
	out, _ := json.Marshal(map[string]any{"seen": seen, "stdin": string(in)})
	fmt.Println(string(out))
}
"#;

fn mtime(p: &PathBuf) -> SystemTime {
    std::fs::symlink_metadata(p).unwrap().modified().unwrap()
}

#[tokio::test]
async fn planted_symlinks_reach_nothing_and_do_not_survive_the_run() {
    let c = TestCluster::builder().start().await;
    let (a, b) = (c.unverified_user().await, c.unverified_user().await);
    let dir = std::env::temp_dir().join(format!("souq-canary-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let canary = dir.join("canary.txt");
    let secret = format!("host canary {}\n", Uuid::new_v4());
    std::fs::write(&canary, &secret).unwrap();
    let watched = [canary.clone(), PathBuf::from("/etc/shadow"), PathBuf::from("/etc/passwd"), PathBuf::from("/var/run/docker.sock")];
    let before: Vec<_> = watched.iter().filter(|p| p.exists()).map(|p| (p.clone(), mtime(p))).collect();
    let targets = json!([canary, "/etc/shadow", "/var/run/docker.sock", "/etc/passwd", "/"]).to_string();

    // Plant, then exit; plant, then run into the timeout.
    for (tail, timeout_ms) in [("sys.exit(3)", 10_000), ("time.sleep(3600)", 3000)] {
        let body = json!({"runtime": "python", "code": PY_PLANT.replace("TAIL", tail), "stdin": targets, "timeout_ms": timeout_ms});
        let (s, _, r) = execute_raw(&c.url, &c.http, &a, &body).await;
        assert_eq!(s, 200, "{r}");
        let res: Value = serde_json::from_str(r["stdout"].as_str().unwrap().trim()).unwrap_or_else(|_| panic!("{r}"));
        eprintln!("plant ({tail}): exit {} timed_out {}: {res}", r["exit_code"], r["timed_out"]);
        assert_eq!(res["planted"].as_array().unwrap().len(), 31, "not every plant was made: {res}");
        assert_eq!(res["exec from /tmp"], "EACCES", "/tmp must be noexec for python: {res}");
    }

    // The next runs, of either user and in each runtime, find no trace of the plants.
    for (token, runtime, code) in [(&a, "python", PY_LOOK), (&b, "python", PY_LOOK), (&b, "node", NODE_LOOK), (&b, "go", GO_LOOK)] {
        let r = run_json(&c, token, runtime, code, "fresh input").await;
        let shown: Vec<_> = r["seen"].as_object().unwrap().keys().filter(|k| !k.starts_with("/tmp/souq/gocache/")).collect();
        eprintln!("{runtime} after the plants sees {} entries: {shown:?} (and the go build cache)", r["seen"].as_object().unwrap().len());
        assert_eq!(r["stdin"], "fresh input", "{runtime}");
        let seen = r["seen"].as_object().unwrap();
        let links: Vec<_> = seen.iter().filter(|(_, t)| t.as_str().unwrap().starts_with("link")).collect();
        assert!(links.is_empty(), "{runtime}: links in a fresh sandbox: {links:?}");
        for p in seen.keys() {
            assert!(p.starts_with("/tmp/souq/") || p == "/tmp/souq", "{runtime}: left from an earlier run: {p}");
        }
    }

    // Nothing on the host was touched.
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), secret, "the host canary changed");
    for (p, t) in &before {
        assert_eq!(mtime(p), *t, "{} was modified", p.display());
    }
    assert_healthy(&c, &a).await;
    std::fs::remove_dir_all(&dir).unwrap();
    c.stop().await;
}

/// Leaves a secret in every place it can (files, /dev/shm, stdin, output, a process's
/// arguments and environment), says it is ready, and holds them for a while.
const PY_LEAVE: &str = r#"
import os, socket, subprocess, sys, time
s = sys.stdin.read().strip()
for p in ["/tmp/secret.txt", "/tmp/souq/secret.txt", "/dev/shm/secret.txt"]:
    with open(p, "w") as f:
        f.write(s)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "MARKER", s], env={"SECRET": s})
print("A:", socket.gethostname(), s, flush=True)
time.sleep(6)
"#;

/// Looks everywhere for a secret, written reversed in the code so that the code itself
/// does not hold it.
const PY_SEEK: &str = r#"
import json, os, socket
secret = b"TERCES"[::-1]
found, procs = [], []
for top in ["/tmp", "/dev/shm", "/var/tmp", "/run"]:
    for d, dirs, files in os.walk(top):
        for n in files:
            p = os.path.join(d, n)
            try:
                if secret in open(p, "rb").read():
                    found.append(p)
            except OSError:
                pass
for pid in filter(str.isdigit, os.listdir("/proc")):
    for what in ["cmdline", "environ"]:
        try:
            data = open("/proc/%s/%s" % (pid, what), "rb").read()
        except OSError:
            continue
        if what == "cmdline":
            procs.append(data.replace(b"\0", b" ").decode().strip())
        if secret in data:
            found.append("/proc/%s/%s" % (pid, what))
if secret.decode() in json.dumps(dict(os.environ)):
    found.append("environ")
print(json.dumps({"found": found, "procs": procs, "host": socket.gethostname()}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_run_is_invisible_to_another_users_run() {
    let c = TestCluster::builder().start().await;
    let (a, b) = (c.unverified_user().await, c.unverified_user().await);
    let (secret, m) = (format!("secret-of-a-{}", Uuid::new_v4().simple()), marker());
    let reversed: String = secret.chars().rev().collect();

    let run_a = {
        let (url, http, a) = (c.url.clone(), c.http.clone(), a.clone());
        let body = json!({"runtime": "python", "code": PY_LEAVE.replace("MARKER", &m), "stdin": secret, "timeout_ms": 20_000});
        tokio::spawn(async move { execute_raw(&url, &http, &a, &body).await })
    };
    // Wait (bounded) until A's secret-holding process is up.
    for _ in 0..200 {
        if !host_procs(&m).is_empty() || run_a.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!host_procs(&m).is_empty(), "A's run never came up");

    // The search does find a secret left in its own sandbox.
    let control = format!("open('/tmp/x', 'w').write('{reversed}'[::-1])\n{}", PY_SEEK.replace("TERCES", &reversed));
    let r = run_json(&c, &b, "python", &control, "").await;
    assert_eq!(r["found"], json!(["/tmp/x"]), "the search is blind: {r}");

    // While A holds its secret, B looks for it; then, after A is gone, B looks again.
    let during = run_json(&c, &b, "python", &PY_SEEK.replace("TERCES", &reversed), "").await;
    let (s, _, ra) = run_a.await.unwrap();
    assert_eq!((s, ra["exit_code"].as_i64()), (200, Some(0)), "{ra}");
    let a_out = ra["stdout"].as_str().unwrap();
    assert!(a_out.contains(&secret), "{ra}");
    assert_no_process(&m);
    let after = run_json(&c, &b, "python", &PY_SEEK.replace("TERCES", &reversed), "").await;
    for (when, r) in [("while A ran", &during), ("after A", &after)] {
        eprintln!("B {when}: found {} processes {}", r["found"], r["procs"]);
        assert_eq!(r["found"], json!([]), "B saw A's secret {when}");
        let procs = r["procs"].as_array().unwrap();
        assert!(procs.len() <= 3, "B sees processes beyond its own {when}: {procs:?}");
        assert!(!a_out.contains(r["host"].as_str().unwrap()), "B ran in A's sandbox {when}");
    }
    assert_healthy(&c, &b).await;
    c.stop().await;
}
