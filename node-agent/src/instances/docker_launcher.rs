//! Instance sandboxes on the Docker Engine: the session's sandbox profile with the shim
//! in `serve` mode, its stdout and stderr followed into the instance's log, and, when it
//! ends, the Engine asked how (exit code, OOM kill; the latter counted in the agent's
//! `souq_agent_sandbox_oom_kills_total`).
use std::{path::PathBuf, sync::Arc, time::Duration};

use bollard::{Docker, container::LogOutput, query_parameters::LogsOptions};
use souq_proto::Runtime;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tracing::debug;

use super::{
    lifecycle::{BoxFuture, Ended, Launched, LaunchedSandbox, Launcher},
    log_buffer::{LineSplitter, LogBuffer, STDERR, STDOUT},
    serve_client::Broken,
    spec::InstanceSpec,
};
use crate::{
    docker::Engine,
    error::Error,
    metrics::Metrics,
    sandbox::{
        container::{Sandbox, SandboxSpec},
        profile::{Limits, ShimMode},
    },
};

/// How long a started instance's shim may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for a container whose shim hung up to exit, to learn its exit code.
const EXIT_PATIENCE: Duration = Duration::from_secs(2);
/// How long to wait for the last of an exited container's output.
const DRAIN_PATIENCE: Duration = Duration::from_secs(1);

/// Starts instance sandboxes on this node's Engine.
#[derive(Debug)]
pub struct DockerLauncher {
    engine: Arc<Engine>,
    node: String,
    limits: Limits,
    channels: PathBuf,
    metrics: Arc<Metrics>,
}

impl DockerLauncher {
    /// Sandboxes of `limits` on `engine`, labelled with `node`, with channels under `channels`.
    pub fn new(engine: Arc<Engine>, node: String, limits: Limits, channels: PathBuf) -> Self {
        DockerLauncher::with_metrics(engine, node, limits, channels, Arc::default())
    }

    /// [`DockerLauncher::new`], counting its sandboxes' OOM kills in `metrics`.
    pub fn with_metrics(engine: Arc<Engine>, node: String, limits: Limits, channels: PathBuf, metrics: Arc<Metrics>) -> Self {
        DockerLauncher { engine, node, limits, channels, metrics }
    }

    async fn start(&self, spec: &InstanceSpec, logs: &Arc<LogBuffer>) -> Result<Launched, Ended> {
        let docker = self.engine.get().map_err(|e| Ended::new(e.to_string()))?;
        let sandbox_spec = SandboxSpec {
            mode: ShimMode::Serve,
            node: &self.node,
            instance: Some(&spec.instance_id),
            image: &spec.image,
            runtime: spec.runtime,
            limits: &self.limits,
        };
        let sandbox = Sandbox::start(&docker, &sandbox_spec, &self.channels)
            .await
            .map_err(|e| Ended::new(format!("could not start the sandbox: {e}")))?;
        let follower = tokio::spawn(follow(docker, sandbox.container_id().to_owned(), logs.clone()));
        let mut launched = DockerSandbox {
            sandbox: Some(sandbox),
            follower,
            memory_mb: self.limits.memory_mb,
            runtime: spec.runtime,
            metrics: self.metrics.clone(),
        };
        let connected = match launched.sandbox.as_mut() {
            Some(s) => s.connect(CONNECT_TIMEOUT).await,
            None => Err(Error::Internal("no sandbox".into())),
        };
        match connected {
            Ok(stream) => Ok(Launched { stream, sandbox: Box::new(launched) }),
            Err(e) => {
                let ended = launched.ended(&Broken::Closed(e.to_string())).await;
                Box::new(launched).remove().await;
                Err(ended)
            }
        }
    }
}

impl Launcher for DockerLauncher {
    fn launch<'a>(&'a self, spec: &'a InstanceSpec, logs: &'a Arc<LogBuffer>) -> BoxFuture<'a, Result<Launched, Ended>> {
        Box::pin(self.start(spec, logs))
    }
}

/// A running instance container and the task following its output.
struct DockerSandbox {
    sandbox: Option<Sandbox>,
    /// Ends with the container's output, returning its last stderr line.
    follower: JoinHandle<Option<String>>,
    memory_mb: u64,
    runtime: Runtime,
    metrics: Arc<Metrics>,
}

impl DockerSandbox {
    async fn describe(&mut self, broken: &Broken) -> Ended {
        let Some(sandbox) = self.sandbox.as_ref() else { return Ended::new(broken.to_string()) };
        // A shim that hung up is exiting: wait a little for the exit code. A channel the
        // agent broke (a timeout) leaves the process running; nothing to wait for.
        let patience = if matches!(broken, Broken::Closed(_)) { EXIT_PATIENCE } else { Duration::ZERO };
        let Some(exit) = sandbox.exit_state(patience).await.filter(|e| !e.running) else {
            return Ended::new(broken.to_string());
        };
        let what = if exit.oom_killed {
            self.metrics.oom_killed(self.runtime.as_str());
            format!("killed: out of memory (the limit is {} MiB)", self.memory_mb)
        } else {
            match exit.exit_code {
                Some(code) if code > 128 => format!("the process was killed by signal {}", code - 128),
                Some(code) => format!("the process exited with code {code}"),
                None => "the process exited".to_owned(),
            }
        };
        let last_stderr = match tokio::time::timeout(DRAIN_PATIENCE, &mut self.follower).await {
            Ok(Ok(last)) => last,
            _ => None,
        };
        Ended { what, last_stderr }
    }
}

impl LaunchedSandbox for DockerSandbox {
    fn ended<'a>(&'a mut self, broken: &'a Broken) -> BoxFuture<'a, Ended> {
        Box::pin(self.describe(broken))
    }

    fn remove(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        self.follower.abort();
        let sandbox = self.sandbox.take();
        Box::pin(async move {
            if let Some(s) = sandbox {
                s.destroy().await;
            }
        })
    }
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        // The sandbox, if still here, removes itself in the background.
        self.follower.abort();
    }
}

/// Feeds the container's stdout and stderr into `logs`, line by line, until the container
/// is gone; returns the last stderr line.
async fn follow(docker: Docker, container: String, logs: Arc<LogBuffer>) -> Option<String> {
    let opts = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
    let mut output = docker.logs(&container, Some(opts));
    let (mut stdout, mut stderr) = (LineSplitter::default(), LineSplitter::default());
    let mut last = None;
    while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdOut { message }) => stdout.feed(&message, |l| logs.push(STDOUT, l)),
            Ok(LogOutput::StdErr { message }) => stderr.feed(&message, |l| {
                logs.push(STDERR, l);
                last = Some(l.to_owned());
            }),
            Ok(_) => {}
            Err(e) => {
                debug!(container = %container, error = %e, "log stream ended");
                break;
            }
        }
    }
    stdout.finish(|l| logs.push(STDOUT, l));
    stderr.finish(|l| {
        logs.push(STDERR, l);
        last = Some(l.to_owned());
    });
    last
}
