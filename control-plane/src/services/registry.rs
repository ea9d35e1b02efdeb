//! `souq.registry.v1.Registry`: node agents register with the join token (and, with
//! mutual TLS, an agent certificate whose key the node is pinned to) and heartbeat
//! their capacity, Docker health and instances. The node rows belong to `nodes`; what the
//! agents say of their instances goes to `deploy`.
use std::sync::Arc;

use souq_proto::registry::{HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse, registry_server};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::join_token;
use crate::{deploy::reports, identity, nodes::registry, state::State};

/// Implements `souq.registry.v1.Registry`.
pub struct RegistryService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl registry_server::Registry for RegistryService {
    #[instrument(skip_all, fields(node = %req.get_ref().node_name))]
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        join_token(&self.state, &req)?;
        let identity = identity::of(&req);
        let req = req.into_inner();
        let row = registry::register(&self.state.nodes, &req, identity).await?;
        let node_id = row.id.to_string();
        reports::apply(&self.state.deployer, row.into(), &req.instances).await?;
        Ok(Response::new(RegisterResponse { node_id, heartbeat_interval_ms: self.state.nodes.heartbeat_interval_ms() }))
    }

    #[instrument(skip_all)]
    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        join_token(&self.state, &req)?;
        let identity = identity::of(&req);
        let req = req.into_inner();
        let Some(row) = registry::heartbeat(&self.state.nodes, &req, identity.as_deref()).await? else {
            return Ok(Response::new(HeartbeatResponse { reregister: true }));
        };
        reports::apply(&self.state.deployer, row.into(), &req.instances).await?;
        Ok(Response::new(HeartbeatResponse { reregister: false }))
    }
}
