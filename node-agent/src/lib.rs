//! Souq's node agent: one per host. It registers with the control plane, serves the
//! `Agent` gRPC service and runs every sandbox on the local Docker Engine through bollard:
//! warm sessions for executes, and the instances of deployed APIs. Both its gRPC links
//! (to the control plane, and its own `Agent` service) use the configured transport:
//! mutual TLS with an agent certificate, or plain text when the operator insists.
//!
//! The layers, each using only those below it: `docker` (the Engine and the runtime
//! images), `sandbox` (the container profile, the shim channel, warm sessions and their
//! pools), `instances` (deployed APIs on top of sandboxes), then `config` and `node`, and
//! on top the gRPC service and the membership loop that `run` starts. Beside the `Agent`
//! service, the agent serves the gRPC health service (overall status `""`: SERVING while
//! it serves and its Docker Engine answers), and counts in [`metrics::Metrics`].
#![forbid(unsafe_code)]

mod agent_service;
pub mod config;
pub mod docker;
pub mod error;
pub mod instances;
mod membership;
pub mod metrics;
mod node;
pub mod sandbox;

use std::{sync::Arc, time::Duration};

use souq_proto::{agent::agent_server::AgentServer, registry::registry_client::RegistryClient, tasks::Tasks, tls::Role};
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic_health::{pb::health_server::HealthServer, server::HealthService};
use tracing::{info, warn};

pub use config::{Config, DEFAULT_CPU_OVERCOMMIT};
/// [`docker::images`], also at the crate root, where `souq` and the tests find it.
pub use docker::images;
pub use docker::Images;
pub use error::{Error, Result};
pub use sandbox::{Limits, MAX_CHANNEL_DIR, PoolConfig, remove_own_containers};

use crate::{agent_service::AgentService, node::Node};

/// How long the background tasks get to finish once the gRPC server has stopped: the
/// membership loop ends at once, the pools destroy their idle sandboxes and the instances
/// remove theirs (they started once the calls in flight had finished, see
/// [`INVOKE_DRAIN`]).
/// Whatever is still running then is aborted, and its containers go with the final sweep.
/// Kept well under the grace a process gets (`souq`'s is 10 s), so the sweep still runs.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long calls in flight get to finish at shutdown before the instances stop: with
/// [`SHUTDOWN_GRACE`] and the sweep, within the 10 s that `souq` gives a role.
pub const INVOKE_DRAIN: Duration = Duration::from_secs(3);
/// How long a stopping agent keeps serving as before, once it has told the control plane
/// that its instances are going: the edges' route tables drop them meanwhile (the leader
/// acts within a pass, about a second, and the edges follow at once), so calls stop
/// arriving here before Invoke refuses them. With [`INVOKE_DRAIN`], [`SHUTDOWN_GRACE`]
/// and the sweep, within the 10 s that `souq` gives a role.
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);

/// Runs the agent on `listener` until `shutdown` is cancelled. Refuses a `cfg` that
/// [`Config::validate`] refuses, before touching the Engine or the filesystem.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    cfg.validate().map_err(Error::Config)?;
    let local = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let tls = cfg.grpc_tls.clone();
    let control_plane = tls
        .endpoint(&cfg.control_plane_url, Role::ControlPlane)
        .map_err(|e| Error::Config(format!("invalid value for --control-plane-url: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        // Pings find a control plane that died or froze (a paused process keeps its
        // sockets open) within about 4 s; the next heartbeat connects again through the
        // Service's name, to a replica that answers.
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(2))
        .connect_lazy();
    let node = Arc::new(Node::new(cfg, local));
    node.clear_leftovers().await?;
    // A reporter used before (an agent run again in one process) may say NOT_SERVING; the
    // first registration pings the Engine and corrects this within moments.
    node.report_health(true).await;

    // A token of the agent's own, cancelled LEAVE_GRACE after the caller's: at the
    // caller's shutdown, membership tells the control plane this node is leaving, and the
    // agent serves as before for LEAVE_GRACE; only then does it stop. The agent stopping
    // its own (say, after its server failed) stops no other role.
    let mut tasks = Tasks::new(CancellationToken::new());
    let registry = RegistryClient::new(control_plane);
    // Cancelled once the instances are stopped at shutdown, for membership's last report.
    let gone = CancellationToken::new();
    tasks.spawn("membership", membership::run(node.clone(), registry, shutdown.clone(), gone.clone()));
    tasks.spawn("warm pools", {
        let (node, token) = (node.clone(), tasks.token());
        async move { node.pools.maintain(&node.engine, token).await }
    });
    // At the signal, Invoke refuses new calls as having run nothing (the edge takes them
    // to another replica) while the calls in flight finish, for at most INVOKE_DRAIN; only
    // then are the instances stopped, which fails what still runs, so the server's drain
    // below never waits longer.
    tasks.spawn("instances", {
        let (node, token) = (node.clone(), tasks.token());
        async move {
            token.cancelled().await;
            let cut = node.instances.drain(INVOKE_DRAIN).await;
            if cut > 0 {
                warn!(calls = cut, "calls still running after the drain; they fail now");
            }
            node.instances.stop_all().await;
            gone.cancel();
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
    let token = tasks.token();
    let node_leaving = node.clone();
    let service = AgentService { node: node.clone(), shutdown: token.clone() };
    let join_token = node.join_token.clone();
    // The control plane and the edges call agents; an agent or anyone else is refused.
    let mut callers = tls.only(&[Role::ControlPlane, Role::Edge]);
    // Health checks come from orchestrators' probes, which present no join token.
    let health = HealthServer::new(HealthService::from_health_reporter(node.health.clone()));
    let served = tls
        .server(tonic::transport::Server::builder())
        .map_err(Error::Config)?
        .layer(souq_proto::grpc_server_traces!())
        .add_service(health)
        .add_service(AgentServer::with_interceptor(service, move |req: tonic::Request<()>| {
            let req = callers(req)?;
            agent_service::authorize(&join_token, &req).map(|()| req)
        }))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.cancelled().await;
            node_leaving.leaving.store(true, std::sync::atomic::Ordering::SeqCst);
            node_leaving.report_health(false).await;
            tokio::time::sleep(LEAVE_GRACE).await;
            token.cancel();
        })
        .await;
    tasks.shutdown(SHUTDOWN_GRACE).await;
    node.remove_stragglers().await;
    served.map_err(|e| Error::Internal(format!("grpc server: {e}")))
}

