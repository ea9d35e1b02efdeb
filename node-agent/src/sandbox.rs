//! One-shot sandboxes: create a container with the profile, attach, start, hand the
//! shim its code, collect bounded output until exit or timeout, then remove it.
//!
//! Lifecycle: `Created` (attached, not started) → `run` → removed. Whatever happens,
//! including the caller going away mid-run, the container is removed: by `finish` on
//! the normal path, by the `Drop` guard otherwise.
use std::{collections::HashMap, time::Duration};

use bollard::{
    Docker,
    container::LogOutput,
    query_parameters::{
        AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
        RemoveContainerOptions,
    },
};
use futures_util::StreamExt;
use souq_proto::agent::ExecuteResult;
use tokio::{io::AsyncWriteExt, time::Instant};
use tracing::warn;

use crate::{
    error::{Error, Result},
    profile::{self, Limits},
};

/// What the shim needs for one run.
pub struct Job<'a> {
    /// Container name suffix and `souq.instance` label.
    pub id: &'a str,
    /// The runtime image.
    pub image: &'a str,
    /// The runtime.
    pub runtime: souq_proto::Runtime,
    /// The user's code.
    pub code: &'a str,
    /// Bytes for the program's stdin.
    pub stdin: &'a [u8],
    /// Wall timeout, already within the node's limit.
    pub timeout: Duration,
}

/// Removes the container when dropped, unless it was already removed.
struct RemoveGuard {
    docker: Docker,
    id: Option<String>,
}

impl RemoveGuard {
    async fn remove(mut self) {
        if let Some(id) = self.id.take() {
            remove(&self.docker, &id).await;
        }
    }
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

/// The shim's framing: a JSON header line, then the code, then stdin.
fn frame(code: &str, stdin: &[u8]) -> Vec<u8> {
    let header = format!("{{\"v\":1,\"code_len\":{},\"stdin_len\":{}}}\n", code.len(), stdin.len());
    let mut buf = Vec::with_capacity(header.len() + code.len() + stdin.len());
    buf.extend_from_slice(header.as_bytes());
    buf.extend_from_slice(code.as_bytes());
    buf.extend_from_slice(stdin);
    buf
}

/// Output kept so far, bounded by the node's limit across both streams.
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    room: usize,
    truncated: bool,
}

impl Output {
    fn new(limit: usize) -> Self {
        Output { stdout: Vec::new(), stderr: Vec::new(), room: limit, truncated: false }
    }

    /// Keeps what fits; returns false once the limit is passed.
    fn push(&mut self, chunk: LogOutput) -> bool {
        let (buf, bytes) = match chunk {
            LogOutput::StdOut { message } | LogOutput::Console { message } => (&mut self.stdout, message),
            LogOutput::StdErr { message } => (&mut self.stderr, message),
            LogOutput::StdIn { .. } => return true,
        };
        let keep = bytes.len().min(self.room);
        buf.extend_from_slice(&bytes[..keep]);
        self.room -= keep;
        if keep < bytes.len() {
            self.truncated = true;
        }
        !self.truncated
    }
}

/// How a run's collection ended.
enum Ending {
    Exited,
    TimedOut,
    Truncated,
}

/// Runs one job in a fresh sandbox and removes it.
pub async fn run(docker: &Docker, node: &str, limits: &Limits, job: Job<'_>) -> Result<ExecuteResult> {
    let labels = HashMap::from([
        (profile::LABEL_NODE.to_owned(), node.to_owned()),
        (profile::LABEL_INSTANCE.to_owned(), job.id.to_owned()),
        (profile::LABEL_KIND.to_owned(), "execute".to_owned()),
    ]);
    let body = profile::execute_container(job.image, job.runtime, limits, labels);
    let name = format!("souq-exec-{}", job.id);
    let created = docker
        .create_container(Some(CreateContainerOptions { name: Some(name), ..Default::default() }), body)
        .await?;
    let guard = RemoveGuard { docker: docker.clone(), id: Some(created.id.clone()) };
    let id = created.id.as_str();

    let attach = AttachContainerOptions { stdin: true, stdout: true, stderr: true, stream: true, ..Default::default() };
    let io = docker.attach_container(id, Some(attach)).await?;
    docker.start_container(id, None).await?;
    let started = Instant::now();
    let deadline = started + job.timeout;

    let input = frame(job.code, job.stdin);
    let mut output = Output::new(limits.output_bytes);
    // The attach connection lives inside this future, so it closes as soon as collection
    // ends: the Engine does not finish stopping a container while its output is unread.
    let collect = async {
        let mut io = io;
        let write = async {
            // A shim that dies before reading its input is not an agent error; the exit
            // status tells the story.
            let _ = io.input.write_all(&input).await;
            let _ = io.input.flush().await;
        };
        let read = async {
            while let Some(chunk) = io.output.next().await {
                match chunk {
                    Ok(c) => {
                        if !output.push(c) {
                            return Ending::Truncated;
                        }
                    }
                    Err(e) => {
                        warn!(container = id, error = %e, "attach stream failed");
                        break;
                    }
                }
            }
            Ending::Exited
        };
        tokio::join!(write, read).1
    };
    let ending = tokio::time::timeout_at(deadline, collect).await.unwrap_or(Ending::TimedOut);
    let duration = started.elapsed();
    if !matches!(ending, Ending::Exited) {
        let kill = KillContainerOptions { signal: "SIGKILL".into() };
        if let Err(e) = docker.kill_container(id, Some(kill)).await {
            warn!(container = id, error = %e, "kill failed");
        }
    }

    let state = wait_stopped(docker, id).await?;
    guard.remove().await;

    let exit_code = state.exit_code.and_then(|c| i32::try_from(c).ok());
    let killed_by_us = !matches!(ending, Ending::Exited);
    let signal = match exit_code {
        Some(c) if c > 128 && c < 128 + 65 => Some(c - 128),
        _ if killed_by_us => Some(9),
        _ => None,
    };
    Ok(ExecuteResult {
        exit_code,
        stdout: output.stdout,
        stderr: output.stderr,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        timed_out: matches!(ending, Ending::TimedOut),
        truncated: output.truncated,
        oom_killed: state.oom_killed,
        signal,
    })
}

/// The final state of a container.
struct Stopped {
    exit_code: Option<i64>,
    oom_killed: bool,
}

/// Waits (briefly) until the container is no longer running and reads its exit state.
async fn wait_stopped(docker: &Docker, id: &str) -> Result<Stopped> {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let info = docker.inspect_container(id, None::<InspectContainerOptions>).await?;
        let state = info.state.unwrap_or_default();
        if !state.running.unwrap_or(false) {
            return Ok(Stopped { exit_code: state.exit_code, oom_killed: state.oom_killed.unwrap_or(false) });
        }
        if Instant::now() > give_up {
            return Err(Error::Docker(format!("container {id} did not stop")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_header_code_stdin() {
        let f = frame("print(1)", b"in");
        assert_eq!(f, b"{\"v\":1,\"code_len\":8,\"stdin_len\":2}\nprint(1)in");
    }

    #[test]
    fn output_is_cut_at_the_limit_across_streams() {
        let mut out = Output::new(5);
        assert!(out.push(LogOutput::StdOut { message: "abc".into() }));
        assert!(!out.push(LogOutput::StdErr { message: "defg".into() }));
        assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"abc"[..], &b"de"[..]));
        assert!(out.truncated);
    }
}
