//! Membership: registers this node with the control plane using the join token, then
//! heartbeats its capacity, Docker health and every instance's status, registering again
//! whenever asked to.
use std::{sync::Arc, time::Duration};

use souq_proto::registry::{
    Capacity, HeartbeatRequest, RegisterRequest, registry_client::RegistryClient,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::{
    docker::{self, images},
    node::Node,
};

const RETRY_MAX: Duration = Duration::from_secs(5);

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(Duration::from_secs(5));
    souq_proto::set_bearer(&mut req, token);
    req
}

/// What the node offers: all its memory (memory limits are hard, so never overcommitted)
/// and its CPUs times the overcommit factor (CPU limits are ceilings, not reservations).
fn capacity(node: &Node) -> Capacity {
    Capacity {
        memory_mb: node.host_memory_mb,
        cpus_milli: node.host_cpus_milli.saturating_mul(node.cpu_overcommit),
        instance_memory_mb: node.limits.memory_mb,
        instance_cpus_milli: node.limits.cpus_milli,
        running: u32::try_from(node.admission.running()).unwrap_or(u32::MAX),
        max_concurrent: u32::try_from(node.admission.max_running()).unwrap_or(u32::MAX),
        warm: node
            .pools
            .levels()
            .into_iter()
            .map(|(rt, n)| (rt.as_str().to_owned(), u32::try_from(n).unwrap_or(u32::MAX)))
            .collect(),
    }
}

async fn register(node: &Node, client: &mut RegistryClient<Channel>) -> Result<(String, Duration), tonic::Status> {
    let (docker_ok, runtimes) = match node.docker() {
        Ok(d) if docker::ping(&d).await => {
            let rts = images::present(&d, &node.images).await.unwrap_or_default();
            (true, rts)
        }
        _ => (false, node.images.keys().copied().collect()),
    };
    let req = RegisterRequest {
        node_name: node.name.clone(),
        advertise_addr: node.advertise_addr.clone(),
        region: node.region.clone(),
        runtimes: runtimes.iter().map(|r| r.as_str().to_owned()).collect(),
        capacity: Some(capacity(node)),
        max_timeout_ms: node.limits.max_timeout_ms,
        docker_ok,
        instances: node.instances.statuses(),
    };
    let resp = client.register(with_token(req, &node.join_token)).await?.into_inner();
    info!(node_id = %resp.node_id, docker_ok, runtimes = ?runtimes, "registered with the control plane");
    Ok((resp.node_id, Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(200)))))
}

/// Keeps this node registered until `shutdown`.
pub(crate) async fn run(node: Arc<Node>, mut client: RegistryClient<Channel>, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (node_id, interval) = match register(&node, &mut client).await {
            Ok(r) => {
                backoff = Duration::from_millis(200);
                r
            }
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "registration failed; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let docker_ok = match node.docker() {
                Ok(d) => docker::ping(&d).await,
                Err(_) => false,
            };
            let hb = HeartbeatRequest {
                node_id: node_id.clone(),
                capacity: Some(capacity(&node)),
                docker_ok,
                instances: node.instances.statuses(),
            };
            match client.heartbeat(with_token(hb, &node.join_token)).await {
                Ok(r) if r.get_ref().reregister => break,
                Ok(_) => {}
                Err(status) => warn!(code = ?status.code(), message = status.message(), "heartbeat failed"),
            }
        }
    }
}
