//! Souq's node agent: one per host. It registers with the control plane, serves the
//! `Agent` gRPC service and runs every sandbox on the local Docker Engine through bollard:
//! warm sessions for executes, and the instances of deployed APIs.
#![forbid(unsafe_code)]

pub mod admission;
pub mod channel;
pub mod docker;
pub mod error;
pub mod frame;
pub mod images;
pub mod instance;
pub mod instances;
pub mod launcher;
pub mod log_stream;
pub mod logs;
pub mod membership;
pub mod pool;
pub mod profile;
pub mod sandbox;
pub mod serve;
pub mod service;
pub mod session;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bollard::{Docker, query_parameters::ListContainersOptions};
use souq_proto::{agent::agent_server::AgentServer, registry::registry_client::RegistryClient};
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{info, warn};

pub use error::{Error, Result};
pub use images::Images;
pub use pool::PoolConfig;
pub use profile::Limits;

/// The agent's configuration, already validated by the caller.
#[derive(Clone)]
pub struct Config {
    /// Unique name of this node; labels every container it makes.
    pub node_name: String,
    /// Region label, e.g. `me-central`.
    pub region: String,
    /// The control plane's gRPC URL.
    pub control_plane_url: String,
    /// The secret that admits this node.
    pub join_token: String,
    /// Where the control plane reaches this agent; `http://<listener address>` if unset.
    pub advertise_addr: Option<String>,
    /// `unix:///path/to/docker.sock`; `DOCKER_HOST` or the default socket if unset.
    pub docker_host: Option<String>,
    /// The image of each runtime.
    pub images: Images,
    /// Sandbox limits.
    pub limits: Limits,
    /// Most sandboxes running at once; further executes wait.
    pub max_concurrent: usize,
    /// Most executes waiting for a slot; further ones are turned away with 503.
    pub queue_depth: usize,
    /// Warm sandboxes.
    pub pool: pool::PoolConfig,
    /// An absolute directory, owned by the agent and seen at the same path by the Docker
    /// Engine, for the sandboxes' channel sockets.
    pub channel_dir: std::path::PathBuf,
    /// How many times its CPUs the node offers to instances ([`DEFAULT_CPU_OVERCOMMIT`];
    /// 0 counts as 1). An instance's CPU limit is a ceiling, not a reservation: most
    /// instances idle most of the time, so the scheduler may place more of them than the
    /// cores would hold at full load. Memory is never overcommitted.
    pub cpu_overcommit: u32,
}

/// The default of [`Config::cpu_overcommit`].
pub const DEFAULT_CPU_OVERCOMMIT: u32 = 4;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("node_name", &self.node_name)
            .field("region", &self.region)
            .field("control_plane_url", &self.control_plane_url)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// This node, as the service and the membership loop share it.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) join_token: String,
    pub(crate) advertise_addr: String,
    pub(crate) images: Images,
    pub(crate) limits: Limits,
    pub(crate) admission: admission::Admission,
    pub(crate) pool: pool::PoolConfig,
    pub(crate) pools: pool::Pools,
    pub(crate) channel_dir: std::path::PathBuf,
    pub(crate) host_memory_mb: u64,
    pub(crate) host_cpus_milli: u32,
    pub(crate) cpu_overcommit: u32,
    pub(crate) instances: instances::Instances,
    engine: Arc<docker::Engine>,
}

impl Node {
    /// The Engine client, connecting again if an earlier attempt failed.
    pub(crate) fn docker(&self) -> Result<Docker> {
        self.engine.get()
    }
}

/// Most instances a node holds: as many as its memory fits at their memory limit (64
/// when the host's memory is unknown), so a confused control plane cannot exhaust it.
fn max_instances(host_memory_mb: u64, limits: &Limits) -> usize {
    match host_memory_mb.checked_div(limits.memory_mb.max(1)) {
        Some(0) | None => 64,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Removes every container labelled with this node's name: leftovers of an earlier run
/// at start, and stragglers at shutdown.
pub async fn remove_own_containers(docker: &Docker, node_name: &str) -> Result<usize> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{}={node_name}", profile::LABEL_NODE)])]);
    let list = docker
        .list_containers(Some(ListContainersOptions { all: true, filters: Some(filters), ..Default::default() }))
        .await?;
    for id in list.iter().filter_map(|c| c.id.as_deref()) {
        sandbox::remove(docker, id).await;
    }
    Ok(list.len())
}

/// Runs the agent on `listener` until `shutdown` is cancelled.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    let local = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let engine = Arc::new(docker::Engine::new(cfg.docker_host));
    let host_memory_mb = host_memory_mb();
    let launcher =
        launcher::DockerLauncher::new(engine.clone(), cfg.node_name.clone(), cfg.limits.clone(), cfg.channel_dir.clone());
    let instances =
        instances::Instances::new(Arc::new(launcher), cfg.limits.output_bytes, max_instances(host_memory_mb, &cfg.limits));
    let node = Arc::new(Node {
        advertise_addr: cfg.advertise_addr.clone().unwrap_or_else(|| format!("http://{local}")),
        name: cfg.node_name,
        region: cfg.region,
        join_token: cfg.join_token,
        images: cfg.images,
        limits: cfg.limits,
        admission: admission::Admission::new(cfg.max_concurrent, cfg.queue_depth),
        pool: cfg.pool,
        pools: pool::Pools::default(),
        channel_dir: cfg.channel_dir.clone(),
        host_memory_mb,
        host_cpus_milli: std::thread::available_parallelism()
            .map_or(1000, |n| u32::try_from(n.get() * 1000).unwrap_or(u32::MAX)),
        cpu_overcommit: cfg.cpu_overcommit.max(1),
        instances,
        engine,
    });
    // Channels of an earlier run are stale: their sandboxes are removed just below.
    let _ = std::fs::remove_dir_all(&node.channel_dir);
    std::fs::create_dir_all(&node.channel_dir)
        .map_err(|e| Error::Internal(format!("channel dir {}: {e}", node.channel_dir.display())))?;
    match node.docker() {
        Ok(d) => match remove_own_containers(&d, &node.name).await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "removed leftover containers of this node"),
            Err(e) => warn!(error = %e, "could not list leftover containers"),
        },
        Err(e) => warn!(error = %e, "Docker Engine unreachable; executes fail until it is back"),
    }

    let cp = Endpoint::from_shared(cfg.control_plane_url.clone())
        .map_err(|e| Error::Internal(format!("control plane URL: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let membership = tokio::spawn(membership::run(node.clone(), RegistryClient::new(cp), shutdown.clone()));
    let pools = tokio::spawn(pool::maintain(node.clone(), shutdown.clone()));
    // Stopping the instances at once fails their calls in flight, so the server's drain
    // below does not wait on them.
    let instances = tokio::spawn({
        let (node, shutdown) = (node.clone(), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            node.instances.stop_all().await;
        }
    });

    info!(addr = %local, node = %node.name, "agent listening");
    // The data path sends many small HTTP/2 frames: Nagle's algorithm would hold them back.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            let _ = c.set_nodelay(true);
        }
        conn
    });
    let served = tonic::transport::Server::builder()
        .add_service(AgentServer::with_interceptor(service::AgentService { node: node.clone(), shutdown: shutdown.clone() }, {
            let token = node.join_token.clone();
            move |req: tonic::Request<()>| service::authorize(&token, &req).map(|()| req)
        }))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    let _ = membership.await;
    let _ = pools.await;
    let _ = instances.await;
    if let Ok(d) = node.docker() {
        let _ = remove_own_containers(&d, &node.name).await;
    }
    served.map_err(|e| Error::Internal(format!("grpc server: {e}")))
}
