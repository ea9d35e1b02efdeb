//! A warm sandbox: a container whose shim runs in `session` mode, waiting for code. It
//! belongs to at most one user, and runs each execution in a fresh process. Requests and
//! answers are length-framed over a Unix socket in a directory that the agent owns and
//! mounts read-only into the sandbox (measured faster than the attached stdio; see
//! docs/PERFORMANCE.md): the shim connects to it, and cannot remove or replace it.
//!
//! Lifecycle: `start` (create, attach, start) → idle in a pool → assigned to one user →
//! `run` … `run` → `destroy` (after an abnormal run, too many uses, or idleness). The
//! container is removed whatever happens: by `destroy`, or by the `Drop` guard.
use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::{
    Docker,
    query_parameters::{CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions},
};
use serde::Deserialize;
use souq_proto::{Runtime, agent::ExecuteResult};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        UnixListener,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    time::Instant,
};
use tracing::warn;

use crate::{
    error::{Error, Result},
    profile::{self, Limits},
};

/// Time on top of a run's timeout for the shim to answer before the sandbox is given up.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// Longest answer header accepted.
const MAX_HEADER: usize = 4096;
/// How long a started sandbox's shim may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The channel directory's path inside the sandbox, and the socket in it.
pub const CHANNEL_MOUNT: &str = "/run/souq";
const SOCKET_NAME: &str = "shim.sock";
/// Longest channel directory, in bytes: a Unix socket path is at most 107 bytes, and
/// `/<16 hex>/shim.sock` takes 27 of them.
pub const MAX_CHANNEL_DIR: usize = 80;

/// The shim's answer header.
#[derive(Debug, Deserialize)]
struct Answer {
    id: u64,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    truncated: bool,
    oom_killed: bool,
    duration_ms: u64,
    stdout_len: usize,
    stderr_len: usize,
    clean: bool,
}

/// One run's outcome, and whether the sandbox may serve again.
#[derive(Debug)]
pub struct Outcome {
    /// What the caller gets.
    pub result: ExecuteResult,
    /// False when the sandbox must be destroyed.
    pub reusable: bool,
}

/// Removes the container and its channel directory when dropped, unless already done.
struct RemoveGuard {
    docker: Docker,
    id: Option<String>,
    channel: PathBuf,
}

impl Drop for RemoveGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.channel);
        if let Some(id) = self.id.take() {
            let docker = self.docker.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { remove(&docker, &id).await });
            }
        }
    }
}

/// Force-removes a container, logging (not failing) when the Engine refuses.
pub(crate) async fn remove(docker: &Docker, id: &str) {
    let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
    if let Err(e) = docker.remove_container(id, Some(opts)).await {
        warn!(container = id, error = %e, "could not remove sandbox");
    }
}

/// A started sandbox with its shim waiting for code.
pub struct Session {
    /// The runtime it runs.
    pub runtime: Runtime,
    /// Runs served so far.
    pub uses: u32,
    /// When it last finished a run (or was started).
    pub last_used: Instant,
    docker: Docker,
    guard: RemoveGuard,
    input: OwnedWriteHalf,
    output: OwnedReadHalf,
    buf: Vec<u8>,
    next_id: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("runtime", &self.runtime).field("uses", &self.uses).finish_non_exhaustive()
    }
}

impl Session {
    /// Creates and starts a sandbox for `runtime`, and waits for its shim to connect to
    /// the socket in a new directory under `channels`.
    pub async fn start(
        docker: &Docker,
        node: &str,
        image: &str,
        runtime: Runtime,
        limits: &Limits,
        channels: &Path,
    ) -> Result<Session> {
        // 64 random bits: short, so that the socket's path stays within the 107 bytes a
        // Unix socket path may have (see `MAX_CHANNEL_DIR`).
        let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let channel = channels.join(&id);
        let io = |e: std::io::Error| Error::Internal(format!("channel {}: {e}", channel.display()));
        std::fs::create_dir_all(&channel).map_err(io)?;
        std::fs::set_permissions(&channel, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        let listener = UnixListener::bind(channel.join(SOCKET_NAME)).map_err(io)?;
        // The sandbox's user must be able to connect; the directory is read-only to it.
        std::fs::set_permissions(channel.join(SOCKET_NAME), std::fs::Permissions::from_mode(0o666)).map_err(io)?;
        let mut guard = RemoveGuard { docker: docker.clone(), id: None, channel: channel.clone() };

        let labels = HashMap::from([
            (profile::LABEL_NODE.to_owned(), node.to_owned()),
            (profile::LABEL_INSTANCE.to_owned(), id.clone()),
            (profile::LABEL_KIND.to_owned(), "session".to_owned()),
        ]);
        let socket = format!("{CHANNEL_MOUNT}/{SOCKET_NAME}");
        let body = profile::session_container(image, runtime, limits, labels, &channel, &socket);
        let name = format!("souq-{}-{id}", runtime.image_name());
        let created = docker
            .create_container(Some(CreateContainerOptions { name: Some(name), ..Default::default() }), body)
            .await?;
        guard.id = Some(created.id.clone());
        docker.start_container(&created.id, None).await?;
        let (stream, _) = tokio::time::timeout(CONNECT_TIMEOUT, listener.accept())
            .await
            .map_err(|_| Error::Internal("the sandbox's shim did not connect".into()))?
            .map_err(io)?;
        let (output, input) = stream.into_split();
        Ok(Session {
            runtime,
            uses: 0,
            last_used: Instant::now(),
            docker: docker.clone(),
            guard,
            input,
            output,
            buf: Vec::new(),
            next_id: 1,
        })
    }

    /// Removes the container and its channel directory.
    pub async fn destroy(mut self) {
        if let Some(id) = self.guard.id.take() {
            remove(&self.docker, &id).await;
        }
        let _ = std::fs::remove_dir_all(&self.guard.channel);
    }

    /// Runs one snippet in a fresh process of this sandbox.
    pub async fn run(&mut self, code: &str, stdin: &[u8], timeout: Duration, output_limit: usize) -> Outcome {
        let started = Instant::now();
        let id = self.next_id;
        self.next_id += 1;
        self.uses += 1;
        let header = format!(
            "{{\"v\":1,\"id\":{id},\"code_len\":{},\"stdin_len\":{},\"timeout_ms\":{},\"output_limit\":{output_limit}}}\n",
            code.len(),
            stdin.len(),
            timeout.as_millis()
        );
        let exchange = async {
            let mut frame = Vec::with_capacity(header.len() + code.len() + stdin.len());
            frame.extend_from_slice(header.as_bytes());
            frame.extend_from_slice(code.as_bytes());
            frame.extend_from_slice(stdin);
            self.input.write_all(&frame).await.map_err(|e| Error::Internal(format!("write to shim: {e}")))?;
            self.input.flush().await.map_err(|e| Error::Internal(format!("write to shim: {e}")))?;
            self.read_answer(id, output_limit).await
        };
        let answer = tokio::time::timeout(timeout + ANSWER_SLACK, exchange).await;
        self.last_used = Instant::now();
        match answer {
            Ok(Ok((a, stdout, stderr))) => {
                let reusable = a.clean && !a.timed_out && !a.truncated && !a.oom_killed && a.signal.is_none();
                Outcome {
                    result: ExecuteResult {
                        exit_code: a.exit_code,
                        stdout,
                        stderr,
                        duration_ms: a.duration_ms,
                        timed_out: a.timed_out,
                        truncated: a.truncated,
                        oom_killed: a.oom_killed,
                        signal: a.signal,
                    },
                    reusable,
                }
            }
            // The shim died (the kernel's OOM killer may have picked it), lied about the
            // protocol, or hung: the sandbox is done for.
            Ok(Err(e)) => self.broken(e.to_string(), started, false).await,
            Err(_) => self.broken("no answer in time".into(), started, true).await,
        }
    }

    async fn broken(&mut self, why: String, started: Instant, timed_out: bool) -> Outcome {
        warn!(runtime = %self.runtime, %why, "sandbox stopped answering; destroying it");
        let oom_killed = match self.guard.id.as_deref() {
            Some(id) => self
                .docker
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.state)
                .and_then(|s| s.oom_killed)
                .unwrap_or(false),
            None => false,
        };
        Outcome {
            result: ExecuteResult {
                exit_code: None,
                stdout: Vec::new(),
                stderr: b"souq: the sandbox ended unexpectedly\n".to_vec(),
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                timed_out,
                truncated: false,
                oom_killed,
                signal: Some(9),
            },
            reusable: false,
        }
    }

    /// Reads from the channel until `buf` holds at least `n` bytes.
    async fn fill(&mut self, n: usize) -> Result<()> {
        while self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
            let read = self.output.read_buf(&mut self.buf).await.map_err(|e| Error::Internal(format!("channel: {e}")))?;
            if read == 0 {
                return Err(Error::Internal("the shim closed the channel".into()));
            }
        }
        Ok(())
    }

    async fn read_answer(&mut self, id: u64, output_limit: usize) -> Result<(Answer, Vec<u8>, Vec<u8>)> {
        let newline = loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                break i;
            }
            if self.buf.len() > MAX_HEADER {
                return Err(Error::Internal("answer header too long".into()));
            }
            let want = self.buf.len() + 1;
            self.fill(want).await?;
        };
        let answer: Answer = serde_json::from_slice(&self.buf[..newline])
            .map_err(|e| Error::Internal(format!("malformed answer header: {e}")))?;
        if answer.id != id || answer.stdout_len.saturating_add(answer.stderr_len) > output_limit {
            return Err(Error::Internal("answer out of step with the request".into()));
        }
        let total = newline + 1 + answer.stdout_len + answer.stderr_len;
        self.fill(total).await?;
        let mut body: Vec<u8> = self.buf.drain(..total).skip(newline + 1).collect();
        let stderr = body.split_off(answer.stdout_len);
        Ok((answer, body, stderr))
    }
}
