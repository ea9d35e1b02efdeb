//! A private Redis server for one test: on a free port, with its own directory and
//! append-only persistence (fsync on every write), so a test can restart it and find
//! every acknowledged write again.
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A running `redis-server`, stopped (and its files removed) when dropped.
pub struct TestRedis {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn spawn(port: u16, dir: &Path) -> Child {
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", "always", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/ensure-services.sh installs it)")
}

fn answers(port: u16) -> bool {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "ping"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

impl TestRedis {
    /// Starts a fresh server and waits until it answers.
    pub async fn start() -> TestRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("souq-redis-{port}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = TestRedis { url: format!("redis://127.0.0.1:{port}"), port, dir, child: None };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        self.child = Some(spawn(self.port, &self.dir));
        for _ in 0..100 {
            if answers(self.port) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Shuts the server down (it writes its append-only file) and waits until it is gone.
    pub async fn stop(&mut self) {
        let _ = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "shutdown"]).output();
        if let Some(mut c) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
        }
    }

    /// Stops the server and starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.up().await;
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
