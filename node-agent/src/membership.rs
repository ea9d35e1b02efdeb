//! Membership: registers this node with the control plane using the join token, then
//! heartbeats its capacity, Docker health and every instance's status, registering again
//! whenever asked to. What it learns of the Docker Engine also sets the agent's gRPC
//! health status.
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
    node.report_health(docker_ok).await;
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

/// How long a leaving agent waits for its instances to stop before its last report.
const GONE_WAIT: Duration = Duration::from_secs(8);

/// Keeps this node registered until `shutdown`; then tells the control plane that the
/// node is leaving, and once `gone` is cancelled (its instances are stopped), that they
/// are gone.
pub(crate) async fn run(
    node: Arc<Node>,
    mut client: RegistryClient<Channel>,
    shutdown: CancellationToken,
    gone: CancellationToken,
) {
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
                () = shutdown.cancelled() => return leave(&node, &mut client, &node_id, &gone).await,
                () = tokio::time::sleep(interval) => {}
            }
            let docker_ok = match node.docker() {
                Ok(d) => docker::ping(&d).await,
                Err(_) => false,
            };
            node.report_health(docker_ok).await;
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

/// The reports of a stopping agent. First, as shutdown starts: no Docker, so the control
/// plane sends it no more work, and its instances still listed, so they stay in the
/// routes while the agent serves for `LEAVE_GRACE` (meanwhile the edges learn of every
/// replacement that started elsewhere just before). Then, once its instances are stopped
/// (or after [`GONE_WAIT`]): none, so the control plane stops counting them and places
/// them again at once. Best effort: a control plane that does not answer within a second
/// learns it when the node goes silent.
async fn leave(node: &Node, client: &mut RegistryClient<Channel>, node_id: &str, gone: &CancellationToken) {
    report(node, client, node_id, "this node is leaving").await;
    if tokio::time::timeout(GONE_WAIT, gone.cancelled()).await.is_err() {
        warn!("instances not stopped in time; reporting what is left");
    }
    report(node, client, node_id, "this node's instances are stopped").await;
}

/// One heartbeat that says Docker is not to be used here, with the instances as they are.
async fn report(node: &Node, client: &mut RegistryClient<Channel>, node_id: &str, what: &str) {
    let hb = HeartbeatRequest {
        node_id: node_id.to_owned(),
        capacity: Some(capacity(node)),
        docker_ok: false,
        instances: node.instances.statuses(),
    };
    let mut req = with_token(hb, &node.join_token);
    req.set_timeout(Duration::from_secs(1));
    match client.heartbeat(req).await {
        Ok(_) => info!("told the control plane: {what}"),
        Err(status) => warn!(code = ?status.code(), message = status.message(), "could not tell the control plane: {what}"),
    }
}
