//! A warm sandbox: a container whose shim runs in `session` mode, waiting for code. It
//! belongs to at most one user, and runs each execution in a fresh process. Requests and
//! answers are length-framed over the sandbox's channel (see `channel`).
//!
//! Lifecycle: `start` (create, start, the shim connects) → idle in a pool → assigned to
//! one user → `run` … `run` → `destroy` (after an abnormal run, too many uses, or
//! idleness). The container is removed whatever happens (see `container`).
use std::{path::Path, time::Duration};

use bollard::Docker;
use serde::Deserialize;
use souq_proto::{Runtime, agent::ExecuteResult};
use tokio::{
    io::AsyncWriteExt,
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
    time::Instant,
};
use tracing::warn;

use super::{
    container::{Sandbox, SandboxSpec},
    frame::{FrameError, FrameReader},
    profile::{Limits, ShimMode},
};
use crate::error::{Error, Result};

/// Time on top of a run's timeout for the shim to answer before the sandbox is given up.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// How long a started sandbox's shim may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

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

/// A started sandbox with its shim waiting for code.
pub struct Session {
    /// The runtime it runs.
    pub runtime: Runtime,
    /// Runs served so far.
    pub uses: u32,
    /// When it last finished a run (or was started).
    pub last_used: Instant,
    sandbox: Sandbox,
    input: OwnedWriteHalf,
    output: FrameReader<OwnedReadHalf>,
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
        let spec = SandboxSpec { mode: ShimMode::Session, node, instance: None, image, runtime, limits };
        let mut sandbox = Sandbox::start(docker, &spec, channels).await?;
        let (output, input) = sandbox.connect(CONNECT_TIMEOUT).await?.into_split();
        let output = FrameReader::new(output);
        Ok(Session { runtime, uses: 0, last_used: Instant::now(), sandbox, input, output, next_id: 1 })
    }

    /// Removes the container and its channel directory.
    pub async fn destroy(self) {
        self.sandbox.destroy().await;
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
        let oom_killed = self.sandbox.oom_killed().await;
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

    async fn read_answer(&mut self, id: u64, output_limit: usize) -> Result<(Answer, Vec<u8>, Vec<u8>)> {
        let channel = |e: FrameError| Error::Internal(e.to_string());
        let answer: Answer = self.output.header().await.map_err(channel)?;
        if answer.id != id || answer.stdout_len.saturating_add(answer.stderr_len) > output_limit {
            return Err(Error::Internal("answer out of step with the request".into()));
        }
        let stdout = self.output.body(answer.stdout_len).await.map_err(channel)?;
        let stderr = self.output.body(answer.stderr_len).await.map_err(channel)?;
        Ok((answer, stdout, stderr))
    }
}
