//! Attack suite, resources: fork bombs, memory bombs, filling the disk and a busy loop
//! are held by the sandbox's limits, and the host and the agent stay healthy.
#![allow(clippy::unwrap_used)]
use std::time::{Duration, Instant};

use serde_json::json;
use souq_tests::{
    TestCluster,
    attack::{assert_healthy, assert_no_process, disk_used_kib, docker_root_dir, df_used_kib, marker, run_json},
};

/// Every process forks for ever; the original one says once that fork failed.
const PY_FORK_BOMB: &str = r#"
import os
me, said = os.getpid(), False
while True:
    try:
        os.fork()
    except OSError as e:
        if os.getpid() == me and not said:
            said = True
            print("fork failed: errno", e.errno, flush=True)
"#;

/// The classic shell fork bomb (dash spells it `f`), its `$0` set to a marker.
const SH_FORK_BOMB: &str = r#"
import subprocess, time
subprocess.Popen(["/bin/sh", "-c", "f() { f | f & }; f", "MARKER"])
time.sleep(3600)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bombs_end_at_the_timeout_and_do_not_starve_the_host() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;

    // The python bomb runs while the host and the agent are asked to keep working.
    let bomb = {
        let (url, http, t) = (c.url.clone(), c.http.clone(), t.clone());
        tokio::spawn(async move {
            let body = json!({"runtime": "python", "code": PY_FORK_BOMB, "timeout_ms": 6000});
            souq_tests::attack::execute_raw(&url, &http, &t, &body).await
        })
    };
    // Give the bomb a moment to reach the pids limit (its sandbox starts in ~1 s).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let host = tokio::task::spawn_blocking(|| {
        (0..10)
            .map(|_| {
                let started = Instant::now();
                let ok = std::process::Command::new("true").status().unwrap().success();
                (ok, started.elapsed())
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(host.iter().all(|(ok, d)| *ok && *d < Duration::from_secs(5)), "host forks during the bomb: {host:?}");
    let during = Instant::now();
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": "print('ok')"})).await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("ok\n")), "a normal execute during the bomb: {r}");
    eprintln!("normal execute during the python fork bomb: {:?}", during.elapsed());

    let (s, _, r) = bomb.await.unwrap();
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["signal"], 9, "{r}");
    assert!(r["stdout"].as_str().unwrap().starts_with("fork failed: errno 11"), "the pids limit was never hit: {r}");
    eprintln!("python fork bomb: {}", json!({"timed_out": r["timed_out"], "exit_code": r["exit_code"], "duration_ms": r["duration_ms"]}));
    assert_healthy(&c, &t).await;

    let m = marker();
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": SH_FORK_BOMB.replace("MARKER", &m), "timeout_ms": 4000})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["timed_out"], true, "{r}");
    eprintln!("shell fork bomb: {}", json!({"timed_out": r["timed_out"], "duration_ms": r["duration_ms"], "stderr": r["stderr"].as_str().unwrap().lines().next()}));
    assert_no_process(&m);
    assert_healthy(&c, &t).await;
    c.stop().await;
}

#[tokio::test]
async fn memory_bombs_are_oom_killed_and_reported() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let bombs = [
        ("python", "x = []\nwhile True:\n    x.append(b'x' * (16 << 20))"),
        ("node", "const a = []; for (;;) a.push(Buffer.alloc(16 << 20, 1));"),
        (
            "go",
            "package main\nfunc main() {\n\tvar a [][]byte\n\tfor {\n\t\tb := make([]byte, 16<<20)\n\t\tfor i := range b {\n\t\t\tb[i] = 1\n\t\t}\n\t\ta = append(a, b)\n\t}\n}",
        ),
    ];
    for (runtime, code) in bombs {
        let (s, r) = c.execute(&t, json!({"runtime": runtime, "code": code, "timeout_ms": 20_000})).await;
        assert_eq!(s, 200, "{r}");
        eprintln!(
            "{runtime} memory bomb: {}",
            json!({"oom_killed": r["oom_killed"], "exit_code": r["exit_code"], "signal": r["signal"], "timed_out": r["timed_out"], "duration_ms": r["duration_ms"]})
        );
        assert_eq!(r["oom_killed"], true, "{runtime}: {r}");
        assert_eq!(r["timed_out"], false, "{runtime}: {r}");
        assert_eq!(r["success"], false, "{runtime}: {r}");
        // Killed by the kernel: no exit code of its own, and the signal says how it ended.
        assert_eq!(r["signal"], 9, "{runtime}: {r}");
        assert!(r["exit_code"].is_null() || r["exit_code"] == 137, "{runtime}: {r}");
    }
    // A child is the one killed while the program itself survives and exits 0.
    let code = "import os, json\npid = os.fork()\nif pid == 0:\n    x = []\n    while True:\n        x.append(b'x' * (16 << 20))\n_, st = os.waitpid(pid, 0)\nprint(json.dumps({'child_signal': os.WTERMSIG(st) if os.WIFSIGNALED(st) else None}))";
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": code, "timeout_ms": 20_000})).await;
    assert_eq!(s, 200, "{r}");
    eprintln!("memory bomb in a child: {}", json!({"oom_killed": r["oom_killed"], "exit_code": r["exit_code"], "result": r["result"]}));
    assert_eq!(r["result"]["child_signal"], 9, "{r}");
    assert_eq!(r["oom_killed"], true, "the answer must say an OOM kill happened: {r}");
    assert_healthy(&c, &t).await;
    c.stop().await;
}

/// Fills /tmp and /dev/shm until they are full, tries to write outside them, then holds
/// the data for a while so the host can measure its disk.
const FILL_DISK: &str = r#"
import errno, json, os, time
res = {}
def fill(d, tag):
    total = 0
    try:
        i = 0
        while True:
            with open("%s/fill%d" % (d, i), "wb") as f:
                for _ in range(8):
                    f.write(b"x" * (1 << 20))
                    total += 1 << 20
            i += 1
    except OSError as e:
        res[tag] = errno.errorcode.get(e.errno, str(e.errno))
    res[tag + "_mib"] = total >> 20
fill("/tmp", "/tmp")
fill("/dev/shm", "/dev/shm")
for p in ["/evil", "/usr/evil", "/etc/passwd", "/var/tmp/evil", "/home/evil", "/tmp/../evil"]:
    try:
        with open(p, "a") as f:
            f.write("x")
        res[p] = "ok"
    except OSError as e:
        res[p] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res), flush=True)
time.sleep(2)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filling_the_disk_fails_inside_and_leaves_host_disk_unchanged() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let root = docker_root_dir();
    let (du_before, df_before) = (disk_used_kib(&root), df_used_kib(&root));
    // Measure the Docker root while the sandbox holds its data.
    let stop = tokio_util::sync::CancellationToken::new();
    let watch = {
        let (root, stop) = (root.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut peak = 0;
            while !stop.is_cancelled() {
                peak = peak.max(disk_used_kib(&root));
                std::thread::sleep(Duration::from_millis(200));
            }
            peak
        })
    };
    let (s, r) = c.execute(&t, json!({"runtime": "python", "code": FILL_DISK, "timeout_ms": 20_000})).await;
    stop.cancel();
    let du_peak = watch.await.unwrap();
    let (du_after, df_after) = (disk_used_kib(&root), df_used_kib(&root));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    let res = &r["result"];
    eprintln!("fill: {res}");
    assert_eq!(res["/tmp"], "ENOSPC", "{r}");
    assert!((56..=64).contains(&res["/tmp_mib"].as_u64().unwrap()), "{r}");
    assert!(["ENOSPC", "EROFS", "EACCES"].contains(&res["/dev/shm"].as_str().unwrap()), "{r}");
    assert!(res["/dev/shm_mib"].as_u64().unwrap() <= 64, "{r}");
    for p in ["/evil", "/usr/evil", "/etc/passwd", "/var/tmp/evil", "/home/evil", "/tmp/../evil"] {
        let e = res[p].as_str().unwrap();
        assert!(e == "EROFS" || e == "EACCES", "writing {p}: {e}");
    }
    let mib = |kib: u64, base: u64| (i64::try_from(kib).unwrap() - i64::try_from(base).unwrap()) / 1024;
    eprintln!(
        "docker root {root}: du before {du_before} KiB, peak +{} MiB, after +{} MiB; df (whole fs, other writers included) +{} MiB",
        mib(du_peak, du_before),
        mib(du_after, du_before),
        mib(df_after, df_before)
    );
    assert!(mib(du_peak, du_before) < 20, "the docker root grew while the sandbox held 64+ MiB: {du_before} -> {du_peak} KiB");
    assert!(mib(du_after, du_before) < 20, "the docker root grew: {du_before} -> {du_after} KiB");
    assert_healthy(&c, &t).await;
    c.stop().await;
}

/// CPU time over wall time of one busy process, then of three at once.
const BUSY: &str = r#"
import json, os, time
def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
w0, c0 = time.monotonic(), time.process_time()
spin(2.0)
one = (time.process_time() - c0) / (time.monotonic() - w0)
w0, kids = time.monotonic(), []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        spin(2.0)
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.waitpid(k, 0)
t = os.times()
many = (t.children_user + t.children_system) / (time.monotonic() - w0)
print(json.dumps({"one": one, "many": many}))
"#;

#[tokio::test]
async fn a_busy_loop_gets_half_a_core() {
    let c = TestCluster::builder().start().await;
    let t = c.unverified_user().await;
    let r = run_json(&c, &t, "python", BUSY, "").await;
    eprintln!("cpu time / wall time: {r}");
    for k in ["one", "many"] {
        let ratio = r[k].as_f64().unwrap();
        assert!((0.3..0.7).contains(&ratio), "{k}: {ratio} (the limit is 0.5 of a core)");
    }
    assert_healthy(&c, &t).await;
    c.stop().await;
}
