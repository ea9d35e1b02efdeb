//! What a sandbox leaves on its host: the channel sockets are for the shim alone, and a
//! retired warm sandbox leaves nothing that counts against other users' sandboxes.
#![allow(clippy::unwrap_used)]

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    time::Duration,
};

use serde_json::json;
use souq_tests::TestCluster;

/// The sandbox's user (nobody).
const SANDBOX_UID: u32 = 65534;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Waits until `n` containers of the cluster exist.
async fn containers(c: &TestCluster, n: usize) {
    for _ in 0..300 {
        if c.containers().len() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} containers, have {:?}", c.containers());
}

#[tokio::test]
async fn channel_sockets_are_the_sandbox_users_alone() {
    let c = TestCluster::builder().warm(1, 100).start().await;
    containers(&c, 3).await;
    let a = c.unverified_user().await;
    let (s, r) = c.execute(&a, json!({"runtime": "python", "code": "print(1)"})).await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("1\n")), "{r}");
    containers(&c, 4).await;
    // The agent's channel root, as `TestCluster` sets it.
    let root = c.data_dir.join("channels-0");
    assert_eq!(mode(&root), 0o711, "others may not list the channels");
    let mut sockets = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        assert_eq!(mode(&dir), 0o711, "{}", dir.display());
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.uid(), 0, "the directory stays the agent's: {}", dir.display());
        let socket = dir.join("shim.sock");
        let meta = std::fs::metadata(&socket).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "{}", socket.display());
        assert_eq!((meta.uid(), meta.gid()), (SANDBOX_UID, SANDBOX_UID), "{}", socket.display());
        sockets += 1;
    }
    // The user's sandbox and the three waiting ones (the pool refilled behind it).
    assert_eq!(sockets, 4);
    // The shim still connects: the user's sandbox serves again.
    let (_, r) = c.execute(&a, json!({"runtime": "python", "code": "print(2)"})).await;
    assert_eq!(r["stdout"], "2\n", "{r}");
    c.stop().await;
}

#[tokio::test]
async fn retired_sandboxes_do_not_evict_other_users() {
    let c = TestCluster::builder().warm(1, 100).start().await;
    containers(&c, 3).await;
    let a = c.unverified_user().await;
    let mark = "import os; open('/tmp/mine', 'w').write('x'); print(os.uname().nodename)";
    let (_, r) = c.execute(&a, json!({"runtime": "python", "code": mark})).await;
    let host = r["stdout"].clone();
    assert_eq!(r["exit_code"], 0, "{r}");
    // As many users as `--pool-max-sessions` (64 by default) each have one abnormal run.
    for _ in 0..64 {
        let u = c.unverified_user().await;
        let (s, r) = c.execute(&u, json!({"runtime": "python", "code": "import time; time.sleep(5)", "timeout_ms": 300})).await;
        assert_eq!((s, &r["timed_out"]), (200, &json!(true)), "{r}");
    }
    let check = "import os; print(os.uname().nodename); print(os.path.exists('/tmp/mine'))";
    let (_, r) = c.execute(&a, json!({"runtime": "python", "code": check})).await;
    let out = r["stdout"].as_str().unwrap();
    assert_eq!(out, format!("{}True\n", host.as_str().unwrap()), "the user kept their sandbox: {r}");
    c.stop().await;
}
