//! This node as the gRPC service and the background tasks share it: its identity, its
//! limits, its host's capacity, the warm pools and the instances it holds, and its
//! Engine. Built once from the [`Config`] by `run`.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use bollard::Docker;
use souq_proto::fence::Fence;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{
    config::Config,
    docker::{Engine, Images, engine},
    error::{Error, Result},
    instances::{DockerLauncher, Instances},
    metrics::Metrics,
    sandbox::{
        admission::{Admission, PerUser},
        container::remove_own_containers,
        pool::{Pools, SessionTemplate},
        profile::Limits,
    },
};

/// This node, as the service and the background tasks share it.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) join_token: String,
    pub(crate) advertise_addr: String,
    pub(crate) images: Images,
    pub(crate) limits: Limits,
    pub(crate) admission: Admission,
    pub(crate) per_user: PerUser,
    pub(crate) pools: Pools,
    pub(crate) channel_dir: PathBuf,
    pub(crate) host_memory_mb: u64,
    pub(crate) host_cpus_milli: u32,
    pub(crate) cpu_overcommit: u32,
    pub(crate) instances: Instances,
    pub(crate) engine: Arc<Engine>,
    /// The highest control-plane epoch seen: Deploy, Stop and Execute with a lower one
    /// come from a control plane that lost the lead, and are refused.
    pub(crate) fence: Fence,
    /// Why the fence kept across restarts (`<channel dir>.epoch`, beside the channel
    /// directory, which a start clears, in the agent's data dir) could not be read; the
    /// start fails with it rather than forget the fence.
    fence_error: Option<String>,
    /// Set when shutdown starts: the control plane has been told this node is leaving,
    /// so a Deploy must not start anything here.
    pub(crate) leaving: std::sync::atomic::AtomicBool,
    /// Where the agent counts.
    pub(crate) metrics: Arc<Metrics>,
    /// The gRPC health statuses; see [`Node::report_health`].
    pub(crate) health: HealthReporter,
}

impl Node {
    /// The node `cfg` describes, listening on `local`. Nothing is started or sent yet.
    pub(crate) fn new(cfg: Config, local: SocketAddr) -> Node {
        let metrics = cfg.metrics;
        engine::count_errors_in(metrics.docker_errors.clone());
        let engine = Arc::new(Engine::new(cfg.docker_host));
        let (fence, fence_error) = match Fence::persisted(&fence_file(&cfg.channel_dir)) {
            Ok(f) => (f, None),
            Err(e) => (Fence::new(), Some(e.to_string())),
        };
        let host_memory_mb = host_memory_mb();
        let launcher = DockerLauncher::with_metrics(
            engine.clone(),
            cfg.node_name.clone(),
            cfg.limits.clone(),
            cfg.channel_dir.clone(),
            metrics.clone(),
        );
        let instances = Instances::with_metrics(
            Arc::new(launcher),
            cfg.limits.output_bytes,
            max_instances(host_memory_mb, &cfg.limits),
            metrics.clone(),
        );
        let template = SessionTemplate {
            node: cfg.node_name.clone(),
            images: cfg.images.clone(),
            limits: cfg.limits.clone(),
            channels: cfg.channel_dir.clone(),
        };
        Node {
            advertise_addr: cfg.advertise_addr.unwrap_or_else(|| format!("http://{local}")),
            name: cfg.node_name,
            region: cfg.region,
            join_token: cfg.join_token,
            images: cfg.images,
            limits: cfg.limits,
            admission: Admission::with_metrics(cfg.max_concurrent, cfg.queue_depth, metrics.clone()),
            per_user: PerUser::new(cfg.max_concurrent_per_user),
            pools: Pools::with_metrics(cfg.pool, template, metrics.clone()),
            channel_dir: cfg.channel_dir,
            host_memory_mb,
            host_cpus_milli: std::thread::available_parallelism()
                .map_or(1000, |n| u32::try_from(n.get() * 1000).unwrap_or(u32::MAX)),
            cpu_overcommit: cfg.cpu_overcommit.max(1),
            instances,
            engine,
            fence,
            fence_error,
            leaving: std::sync::atomic::AtomicBool::new(false),
            metrics,
            health: cfg.health,
        }
    }

    /// Whether shutdown has started (see `leaving`).
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets the overall gRPC health status (`""`): SERVING while the node is not leaving
    /// and its Engine answers (`docker_ok`), else NOT_SERVING.
    pub(crate) async fn report_health(&self, docker_ok: bool) {
        let serving = docker_ok && !self.is_leaving();
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.health.set_service_status("", status).await;
        // Shutdown may have begun meanwhile, its NOT_SERVING set before this SERVING.
        if serving && self.is_leaving() {
            self.health.set_service_status("", ServingStatus::NotServing).await;
        }
    }

    /// The Engine client, connecting again if an earlier attempt failed.
    pub(crate) fn docker(&self) -> Result<Docker> {
        self.engine.get()
    }

    /// Clears what an earlier run of this node left: its channel directories and its
    /// containers. An unreachable Engine is not fatal; executes fail until it is back.
    pub(crate) async fn clear_leftovers(&self) -> Result<()> {
        if let Some(e) = &self.fence_error {
            return Err(Error::Internal(format!("cannot read the control-plane epoch fence: {e}")));
        }
        if self.fence.highest() > 0 {
            info!(epoch = self.fence.highest(), "control-plane epoch fence restored");
        }
        // Channels of an earlier run are stale: their sandboxes are removed just below.
        let _ = std::fs::remove_dir_all(&self.channel_dir);
        std::fs::create_dir_all(&self.channel_dir)
            .map_err(|e| Error::Internal(format!("channel dir {}: {e}", self.channel_dir.display())))?;
        match self.docker() {
            Ok(d) => match remove_own_containers(&d, &self.name).await {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "removed leftover containers of this node"),
                Err(e) => warn!(error = %e, "could not list leftover containers"),
            },
            Err(e) => warn!(error = %e, "Docker Engine unreachable; executes fail until it is back"),
        }
        Ok(())
    }

    /// Removes every container of this node still there: the last step of a shutdown,
    /// after the tasks that remove their own have had their grace period.
    pub(crate) async fn remove_stragglers(&self) {
        if let Ok(d) = self.docker() {
            match remove_own_containers(&d, &self.name).await {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "removed the node's remaining containers"),
                Err(e) => warn!(error = %e, "could not list the node's remaining containers"),
            }
        }
    }
}

/// Where the fence of the agent whose channel directory is `channel_dir` is kept.
fn fence_file(channel_dir: &std::path::Path) -> PathBuf {
    let mut file = channel_dir.as_os_str().to_owned();
    file.push(".epoch");
    PathBuf::from(file)
}

/// Most instances a node holds: as many as its memory fits at their memory limit (64
/// when the host's memory is unknown), so a confused control plane cannot exhaust it.
fn max_instances(host_memory_mb: u64, limits: &Limits) -> usize {
    match host_memory_mb.checked_div(limits.memory_mb.max(1)) {
        Some(0) | None => 64,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

/// The host's memory in MiB, from `/proc/meminfo`; 0 when unknown.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_kept_beside_the_channel_directory() {
        assert_eq!(fence_file(std::path::Path::new("/var/lib/souq/channels")), PathBuf::from("/var/lib/souq/channels.epoch"));
    }

    #[test]
    fn instances_fit_the_hosts_memory() {
        let limits = Limits { memory_mb: 256, ..Limits::DEFAULT };
        assert_eq!(max_instances(1024, &limits), 4);
        assert_eq!(max_instances(0, &limits), 64, "unknown memory");
    }
}
