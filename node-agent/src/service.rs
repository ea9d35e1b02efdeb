//! The `Agent` gRPC service: the control plane's handle on this node's sandboxes.
use std::{sync::Arc, time::Duration};

use souq_proto::{
    Kind, Runtime,
    agent::{ExecuteRequest, ExecuteResult, agent_server},
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{
    Node,
    error::{Error, Result},
    pool,
};

/// Largest code or stdin accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// Implements `souq.agent.v1.Agent`.
pub struct AgentService {
    pub(crate) node: Arc<Node>,
}

/// Admits only callers that present this node's join token.
pub(crate) fn authorize(join_token: &str, req: &Request<()>) -> Result<(), Status> {
    if souq_proto::bearer_is(req.metadata(), join_token) {
        Ok(())
    } else {
        Err(souq_proto::WireError::new(Kind::Unauthenticated, "invalid join token").into())
    }
}

impl AgentService {
    async fn execute_inner(&self, req: ExecuteRequest) -> Result<ExecuteResult> {
        let runtime: Runtime = req.runtime.parse().map_err(|e: souq_proto::runtime::UnknownRuntime| {
            Error::Wire(souq_proto::WireError::invalid("runtime", e.to_string()))
        })?;
        let limits = &self.node.limits;
        let timeout_ms = match req.timeout_ms {
            0 => limits.max_timeout_ms,
            t if t > limits.max_timeout_ms => {
                return Err(Error::Wire(souq_proto::WireError::invalid(
                    "timeout_ms",
                    format!("must be at most {}", limits.max_timeout_ms),
                )));
            }
            t => t,
        };
        if req.code.len() > MAX_INPUT_BYTES || req.stdin.len() > MAX_INPUT_BYTES {
            return Err(Error::Wire(souq_proto::WireError::invalid("code", "code and stdin are limited to 256 KiB each")));
        }
        self.node.images.get(&runtime).ok_or_else(|| {
            Error::Wire(souq_proto::WireError::new(Kind::NoCapacity, format!("this node has no image for {runtime}")))
        })?;
        let docker = self.node.docker()?;
        let ticket = self.node.admission.enter().ok_or_else(|| {
            Error::Wire(souq_proto::WireError {
                retry_after: Some(1),
                ..souq_proto::WireError::new(Kind::NoCapacity, "this node is at capacity; try again shortly")
            })
        })?;
        let _slot = ticket.slot().await.ok_or_else(|| Error::Internal("shutting down".into()))?;
        let user = if req.user_id.is_empty() { "anonymous" } else { req.user_id.as_str() };
        pool::execute(&self.node, &docker, user, runtime, &req.code, &req.stdin, Duration::from_millis(timeout_ms)).await
    }
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    #[instrument(skip_all, fields(execution_id = %req.get_ref().execution_id, runtime = %req.get_ref().runtime))]
    async fn execute(&self, req: Request<ExecuteRequest>) -> Result<Response<ExecuteResult>, Status> {
        Ok(Response::new(self.execute_inner(req.into_inner()).await?))
    }
}
