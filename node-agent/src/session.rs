//! A warm sandbox: a container whose shim runs in `session` mode, waiting for code. It
//! belongs to at most one user, and runs each execution in a fresh process. Requests and
//! answers are length-framed over the container's attached stdin and stdout; the shim's
//! stderr carries only its own diagnostics.
//!
//! Lifecycle: `start` (create, attach, start) → idle in a pool → assigned to one user →
//! `run` … `run` → `destroy` (after an abnormal run, too many uses, or idleness). The
//! container is removed whatever happens: by `destroy`, or by the `Drop` guard.
use std::{collections::HashMap, pin::Pin, time::Duration};

use bollard::{
    Docker,
    container::LogOutput,
    query_parameters::{
        AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions,
    },
};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use souq_proto::{Runtime, agent::ExecuteResult};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    time::Instant,
};
use tracing::{debug, warn};

use crate::{
    error::{Error, Result},
    profile::{self, Limits},
};

/// Time on top of a run's timeout for the shim to answer before the sandbox is given up.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// Longest answer header accepted.
const MAX_HEADER: usize = 4096;
/// Most bytes of shim diagnostics logged per sandbox.
const MAX_DIAGNOSTICS: usize = 2048;

type Output = Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>>;

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

/// Removes the container when dropped, unless it was already removed.
struct RemoveGuard {
    docker: Docker,
    id: Option<String>,
}

impl Drop for RemoveGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let docker = self.docker.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { remove(&docker, &id).await });
            }
        }
    }
}

async fn remove(docker: &Docker, id: &str) {
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
    input: Pin<Box<dyn AsyncWrite + Send>>,
    output: Output,
    buf: Vec<u8>,
    next_id: u64,
    diagnostics: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("runtime", &self.runtime).field("uses", &self.uses).finish_non_exhaustive()
    }
}

impl Session {
    /// Creates and starts a sandbox for `runtime`, attached and waiting.
    pub async fn start(docker: &Docker, node: &str, image: &str, runtime: Runtime, limits: &Limits) -> Result<Session> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let labels = HashMap::from([
            (profile::LABEL_NODE.to_owned(), node.to_owned()),
            (profile::LABEL_INSTANCE.to_owned(), id.clone()),
            (profile::LABEL_KIND.to_owned(), "session".to_owned()),
        ]);
        let body = profile::session_container(image, runtime, limits, labels);
        let name = format!("souq-{}-{id}", runtime.image_name());
        let created = docker
            .create_container(Some(CreateContainerOptions { name: Some(name), ..Default::default() }), body)
            .await?;
        let guard = RemoveGuard { docker: docker.clone(), id: Some(created.id.clone()) };
        let attach = AttachContainerOptions { stdin: true, stdout: true, stderr: true, stream: true, ..Default::default() };
        let io = docker.attach_container(&created.id, Some(attach)).await?;
        docker.start_container(&created.id, None).await?;
        Ok(Session {
            runtime,
            uses: 0,
            last_used: Instant::now(),
            docker: docker.clone(),
            guard,
            input: io.input,
            output: io.output,
            buf: Vec::new(),
            next_id: 1,
            diagnostics: 0,
        })
    }

    /// Removes the container.
    pub async fn destroy(mut self) {
        if let Some(id) = self.guard.id.take() {
            remove(&self.docker, &id).await;
        }
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

    /// Reads bytes of stdout until `buf` holds at least `n`.
    async fn fill(&mut self, n: usize) -> Result<()> {
        while self.buf.len() < n {
            match self.output.next().await {
                Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                    self.buf.extend_from_slice(&message);
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    if self.diagnostics < MAX_DIAGNOSTICS {
                        self.diagnostics += message.len();
                        let text = String::from_utf8_lossy(&message[..message.len().min(MAX_DIAGNOSTICS)]).into_owned();
                        debug!(runtime = %self.runtime, diagnostics = %text.trim_end(), "shim said");
                    }
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => return Err(Error::Internal(format!("attach stream: {e}"))),
                None => return Err(Error::Internal("the shim closed its output".into())),
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
