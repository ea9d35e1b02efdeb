//! The `Agent` gRPC service: the control plane's handle on this node's sandboxes and
//! instances, and the edge's data path (Invoke). Executes and invokes are counted here,
//! by outcome, with their latency.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use souq_proto::{
    Kind, Runtime, WireError,
    agent::{
        DeployRequest, ExecuteRequest, ExecuteResult, InstanceStatus, InvokeRequest, InvokeResult, LogLine, LogsRequest,
        ResultKind, StopRequest, StopResult, agent_server,
    },
    fence,
    limits::{MAX_STDIN_BYTES, check_code},
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{
    docker::images,
    error::{Error, Result},
    instances::{log_stream, spec},
    metrics::{ExecuteOutcome, InvokeOutcome, runtime_label},
    node::Node,
    sandbox::pool::Job,
};

/// Implements `souq.agent.v1.Agent`.
pub(crate) struct AgentService {
    pub(crate) node: Arc<Node>,
    /// Ends followed log streams, which would otherwise hold the server's drain open.
    pub(crate) shutdown: CancellationToken,
}

/// Admits only callers that present this node's join token.
pub(crate) fn authorize(join_token: &str, req: &Request<()>) -> Result<(), Status> {
    if souq_proto::bearer_is(req.metadata(), join_token) {
        Ok(())
    } else {
        Err(WireError::new(Kind::Unauthenticated, "invalid join token").into())
    }
}

impl AgentService {
    async fn execute_inner(&self, req: ExecuteRequest) -> Result<ExecuteResult> {
        let runtime = Runtime::from_request(&req.runtime).map_err(Error::Wire)?;
        let limits = &self.node.limits;
        let timeout_ms = match req.timeout_ms {
            0 => limits.max_timeout_ms,
            t if t > limits.max_timeout_ms => {
                return Err(Error::Wire(WireError::invalid(
                    "timeout_ms",
                    format!("must be at most {}", limits.max_timeout_ms),
                )));
            }
            t => t,
        };
        check_code("code", &req.code).map_err(Error::Wire)?;
        if req.stdin.len() > MAX_STDIN_BYTES {
            let kib = MAX_STDIN_BYTES / 1024;
            let message = format!("must be at most {MAX_STDIN_BYTES} bytes ({kib} KiB)");
            return Err(Error::Wire(WireError::invalid("stdin", message)));
        }
        self.node.images.get(&runtime).ok_or_else(|| {
            Error::Wire(WireError::new(Kind::NoCapacity, format!("this node has no image for {runtime}")))
        })?;
        let docker = self.node.docker()?;
        let user = if req.user_id.is_empty() { "anonymous" } else { req.user_id.as_str() };
        // The user's own place first: a user at their cap is refused without taking one of
        // the node's, so the node's slots and queue stay open to everyone else.
        let _turn = self.node.per_user.enter(user).ok_or_else(|| {
            let cap = self.node.per_user.cap();
            Error::Wire(WireError {
                retry_after: Some(1),
                ..WireError::new(
                    Kind::TooManyConcurrent,
                    format!("you have {cap} executes running or waiting on this node, the most one user may; try again when one ends"),
                )
            })
        })?;
        let ticket = self.node.admission.enter().ok_or_else(|| {
            Error::Wire(WireError {
                retry_after: Some(1),
                ..WireError::new(Kind::NoCapacity, "this node is at capacity; try again shortly")
            })
        })?;
        // The running slot is taken inside, once the user's sandbox is free.
        let job = Job { code: &req.code, stdin: &req.stdin, timeout: Duration::from_millis(timeout_ms) };
        self.node.pools.execute(&docker, user, runtime, job, &ticket).await
    }
}

impl AgentService {
    async fn deploy_inner(&self, req: DeployRequest) -> Result<InstanceStatus> {
        let spec = spec::validate(req, &self.node.images, &self.node.limits)?;
        if self.node.instances.get(&spec.instance_id).is_none() {
            // Refused here rather than crash-looping: the control plane can place it elsewhere.
            let docker = self.node.docker()?;
            if !images::exists(&docker, &spec.image).await? {
                return Err(Error::Wire(WireError::new(
                    Kind::NoCapacity,
                    format!("this node's {} image is missing", spec.runtime),
                )));
            }
        }
        self.node.instances.deploy(spec).await
    }
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    type LogsStream = ReceiverStream<Result<LogLine, Status>>;

    #[instrument(skip_all, fields(execution_id = %req.get_ref().execution_id, runtime = %req.get_ref().runtime))]
    async fn execute(&self, req: Request<ExecuteRequest>) -> Result<Response<ExecuteResult>, Status> {
        let started = Instant::now();
        let runtime = runtime_label(Runtime::from_request(&req.get_ref().runtime).ok());
        let metrics = &self.node.metrics;
        if let Err(stale) = self.node.fence.admit(fence::epoch_of(req.metadata())) {
            metrics.executed(runtime, ExecuteOutcome::Refused, started.elapsed());
            return Err(stale);
        }
        let result = self.execute_inner(req.into_inner()).await;
        let outcome = match &result {
            Ok(r) => ExecuteOutcome::of_result(r),
            Err(e) => ExecuteOutcome::of_error(e),
        };
        metrics.executed(runtime, outcome, started.elapsed());
        Ok(Response::new(result?))
    }

    #[instrument(skip_all, fields(instance_id = %req.get_ref().instance_id, api_id = %req.get_ref().api_id))]
    async fn deploy(&self, req: Request<DeployRequest>) -> Result<Response<InstanceStatus>, Status> {
        self.node.fence.admit(fence::epoch_of(req.metadata()))?;
        if self.node.is_leaving() {
            // The control plane was told this node is leaving: it places the instance
            // elsewhere when this refusal comes back.
            return Err(WireError::new(Kind::Unavailable, "this node agent is shutting down").into());
        }
        Ok(Response::new(self.deploy_inner(req.into_inner()).await?))
    }

    #[instrument(skip_all, fields(instance_id = %req.get_ref().instance_id))]
    async fn stop(&self, req: Request<StopRequest>) -> Result<Response<StopResult>, Status> {
        self.node.fence.admit(fence::epoch_of(req.metadata()))?;
        self.node.instances.stop(&req.get_ref().instance_id).await?;
        Ok(Response::new(StopResult {}))
    }

    // The data path: debug level, so the span costs nothing unless asked for. The event's
    // size is bounded by the server's message limit (tonic's 4 MiB default). A refusal
    // that ran nothing (no such instance, not serving, too many calls, draining) carries
    // the `souq_proto::outcome` mark, so the edge may try another replica.
    #[instrument(level = "debug", skip_all, fields(instance_id = %req.get_ref().instance_id))]
    async fn invoke(&self, req: Request<InvokeRequest>) -> Result<Response<InvokeResult>, Status> {
        let started = Instant::now();
        let InvokeRequest { instance_id, event, timeout_ms } = req.into_inner();
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        let result = self.node.instances.call(&instance_id, event, timeout).await;
        let outcome = match &result {
            Ok(r) if r.kind == i32::from(ResultKind::Error) => InvokeOutcome::Error,
            Ok(_) => InvokeOutcome::Ok,
            Err(e) => InvokeOutcome::of_error(&e.error, e.ran_nothing),
        };
        let metrics = &self.node.metrics;
        metrics.invoked(outcome, started.elapsed());
        if outcome == InvokeOutcome::Timeout {
            let runtime = self.node.instances.get(&instance_id).map(|i| i.spec().runtime);
            metrics.timed_out(runtime_label(runtime));
        }
        Ok(Response::new(result?))
    }

    #[instrument(skip_all, fields(instances = req.get_ref().instance_ids.len(), follow = req.get_ref().follow))]
    async fn logs(&self, req: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        if req.instance_ids.len() > log_stream::MAX_INSTANCE_IDS {
            return Err(Error::Wire(WireError::invalid(
                "instance_ids",
                format!("at most {} instances at once", log_stream::MAX_INSTANCE_IDS),
            ))
            .into());
        }
        // Instances this node does not hold are skipped: the caller asks every node.
        let sources = req
            .instance_ids
            .into_iter()
            .filter_map(|id| self.node.instances.get(&id).map(|i| (id, i.logs().clone())))
            .collect();
        let tail = usize::try_from(req.tail).unwrap_or(usize::MAX);
        Ok(Response::new(log_stream::stream(sources, tail, req.follow, self.shutdown.clone())))
    }
}

#[cfg(test)]
#[path = "agent_service_tests.rs"]
mod tests;
