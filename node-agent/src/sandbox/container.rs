//! A sandbox: one container of the sandbox profile with its channel. Warm sessions and
//! API instances are made, connected and removed the same way; only the shim mode and
//! the labels differ. The container and the channel directory are removed whatever
//! happens: by [`Sandbox::destroy`], or by the `Drop` guard.
use std::{collections::HashMap, path::Path, time::Duration};

use bollard::{
    Docker,
    query_parameters::{
        CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions, WaitContainerOptions,
    },
};
use souq_proto::Runtime;
use tokio::net::UnixStream;
use tokio_stream::StreamExt;
use tracing::warn;

use super::{
    channel::{Channel, SANDBOX_SOCKET},
    profile::{self, Limits, ShimMode},
};
use crate::{
    docker::engine::Operation,
    error::{Error, Result},
};

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct SandboxSpec<'a> {
    /// What its shim does.
    pub mode: ShimMode,
    /// This node's name, for the labels.
    pub node: &'a str,
    /// The instance it serves; `None` for a session, which is labelled with its own id.
    pub instance: Option<&'a str>,
    /// The runtime's image.
    pub image: &'a str,
    /// The runtime.
    pub runtime: Runtime,
    /// The operator's limits.
    pub limits: &'a Limits,
}

/// How a sandbox's container ended, as far as the Engine tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitState {
    /// Still running (the channel broke but the process did not exit).
    pub running: bool,
    /// The exit code, once exited.
    pub exit_code: Option<i64>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// A created and started sandbox container and its channel.
#[derive(Debug)]
pub struct Sandbox {
    docker: Docker,
    container: Option<String>,
    channel: Channel,
}

impl Sandbox {
    /// Opens a channel under `channels`, then creates and starts the container; its shim
    /// connects next, see [`Sandbox::connect`].
    pub async fn start(docker: &Docker, spec: &SandboxSpec<'_>, channels: &Path) -> Result<Sandbox> {
        let channel = Channel::open(channels)?;
        let id = spec.instance.unwrap_or(channel.id()).to_owned();
        let labels = profile::labels(spec.node, spec.mode, &id);
        let body = profile::sandbox_container(spec.mode, spec.image, spec.runtime, spec.limits, labels, channel.dir(), SANDBOX_SOCKET);
        // The channel id keeps names unique when an instance is restarted while its
        // previous container is still being removed.
        let name = match spec.instance {
            Some(instance) => format!("souq-{instance}-{}", channel.id()),
            None => format!("souq-{}-{}", spec.runtime.image_name(), channel.id()),
        };
        let mut sandbox = Sandbox { docker: docker.clone(), container: None, channel };
        let created = docker
            .create_container(Some(CreateContainerOptions { name: Some(name), ..Default::default() }), body)
            .await
            .map_err(Operation::Create.error())?;
        sandbox.container = Some(created.id.clone());
        docker.start_container(&created.id, None).await.map_err(Operation::Start.error())?;
        Ok(sandbox)
    }

    /// The container's id.
    pub fn container_id(&self) -> &str {
        self.container.as_deref().unwrap_or_default()
    }

    /// Waits up to `timeout` for the shim to connect, giving up early if the container
    /// exits first (a shim that cannot start, e.g. an image without this mode).
    pub async fn connect(&mut self, timeout: Duration) -> Result<UnixStream> {
        let (docker, id) = (self.docker.clone(), self.container_id().to_owned());
        let exited = async move {
            let mut wait = docker.wait_container(&id, None::<WaitContainerOptions>);
            match wait.next().await {
                Some(Ok(_) | Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {}
                // The Engine cannot tell: the timeout decides.
                Some(Err(e)) => {
                    Operation::Wait.failed_with(&e);
                    std::future::pending().await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // A shim that connected and then exited has still connected.
            biased;
            stream = self.channel.accept(timeout) => stream,
            () = exited => Err(Error::Internal("the sandbox exited before its shim connected".into())),
        }
    }

    /// Removes the container and its channel directory.
    pub async fn destroy(mut self) {
        if let Some(id) = self.container.take() {
            remove(&self.docker, &id).await;
        }
    }

    /// Whether the kernel's OOM killer ended the container.
    pub async fn oom_killed(&self) -> bool {
        self.exit_state(Duration::ZERO).await.is_some_and(|s| s.oom_killed)
    }

    /// How the container ended, waiting up to `patience` for it to exit; `None` when the
    /// Engine cannot tell.
    pub async fn exit_state(&self, patience: Duration) -> Option<ExitState> {
        let id = self.container.as_deref()?;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let inspected = self.docker.inspect_container(id, None::<InspectContainerOptions>).await;
            let state = inspected.map_err(|e| Operation::Inspect.failed_with(&e)).ok()?.state?;
            let exit = ExitState {
                running: state.running.unwrap_or(false),
                exit_code: state.exit_code,
                oom_killed: state.oom_killed.unwrap_or(false),
            };
            if !exit.running || tokio::time::Instant::now() >= deadline {
                return Some(exit);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(id) = self.container.take() {
            let docker = self.docker.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { remove(&docker, &id).await });
            }
        }
        // The channel directory goes with `self.channel`.
    }
}

/// Force-removes a container, logging (not failing) when the Engine refuses.
async fn remove(docker: &Docker, id: &str) {
    let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
    if let Err(e) = docker.remove_container(id, Some(opts)).await {
        Operation::Remove.failed_with(&e);
        warn!(container = id, error = %e, "could not remove sandbox");
    }
}

/// Removes every sandbox this node made (sessions and instances alike, labelled with the
/// node's name and a kind): leftovers of an earlier run at start, and stragglers at
/// shutdown. Other containers on the host that name the node (the agent's own, under an
/// orchestrator that labels a host's workloads) carry no kind and are left alone.
/// Returns how many there were.
pub async fn remove_own_containers(docker: &Docker, node_name: &str) -> Result<usize> {
    // Docker ANDs label filters: this node's name, and a kind of any value.
    let labels = vec![format!("{}={node_name}", profile::LABEL_NODE), profile::LABEL_KIND.to_owned()];
    let filters = HashMap::from([("label".to_owned(), labels)]);
    let list = docker
        .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
        .await
        .map_err(Operation::List.error())?;
    for id in list.iter().filter_map(|c| c.id.as_deref()) {
        remove(docker, id).await;
    }
    Ok(list.len())
}
