//! A fake node agent: `Invoke` answers by a pluggable [`Behaviour`] (echo, a fixed answer,
//! a refusal, a wait first); the agent's other RPCs are unimplemented.
use std::{sync::Arc, time::Duration};

use souq_proto::{
    Kind, WireError,
    agent::{
        DeployRequest, ExecuteRequest, ExecuteResult, InstanceStatus, InvokeRequest, InvokeResult, LogLine,
        LogsRequest, ResultKind, StopRequest, StopResult,
        agent_server::{Agent, AgentServer},
    },
};
use tonic::{Request, Response, Status};

use crate::{Served, bearer_ok, serve};

/// What the fake does with one call.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers with the call's event as a JSON result.
    Echo,
    /// Answers with this result kind and body.
    Answer(ResultKind, Vec<u8>),
    /// Refuses with this status (e.g. a [`WireError`] turned into one).
    Fail(Status),
    /// Waits this long, then behaves as the inner behaviour.
    Sleep(Duration, Box<Behaviour>),
}

/// Picks the behaviour for one call.
type Decide = dyn Fn(&InvokeRequest) -> Behaviour + Send + Sync;

/// A fake agent. Cheap to clone; clones share the behaviour.
#[derive(Clone)]
pub struct FakeAgent {
    decide: Arc<Decide>,
    join_token: Option<String>,
}

impl std::fmt::Debug for FakeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAgent").finish_non_exhaustive()
    }
}

impl FakeAgent {
    /// An agent whose every call is decided by `decide` (say, by `instance_id`).
    pub fn new(decide: impl Fn(&InvokeRequest) -> Behaviour + Send + Sync + 'static) -> Self {
        FakeAgent { decide: Arc::new(decide), join_token: None }
    }

    /// An agent that answers every call with its event.
    pub fn echo() -> Self {
        Self::new(|_| Behaviour::Echo)
    }

    /// An agent that answers every call with `kind` and `body` at once.
    pub fn answering(kind: ResultKind, body: &[u8]) -> Self {
        let body = body.to_vec();
        Self::new(move |_| Behaviour::Answer(kind, body.clone()))
    }

    /// Refuses calls that do not carry `token` as their bearer (UNAUTHENTICATED), as a
    /// real agent refuses a wrong join token.
    pub fn expecting_join_token(mut self, token: &str) -> Self {
        self.join_token = Some(token.to_owned());
        self
    }

    /// Serves the agent on a loopback port.
    pub async fn serve(&self) -> Served {
        serve(tonic::service::Routes::new(AgentServer::new(self.clone()))).await
    }
}

fn answer(kind: ResultKind, body: Vec<u8>) -> Result<Response<InvokeResult>, Status> {
    Ok(Response::new(InvokeResult { kind: kind as i32, body, duration_ms: 1 }))
}

/// Carries out `behaviour` for a call whose event is `event`.
async fn act(behaviour: Behaviour, event: Vec<u8>) -> Result<Response<InvokeResult>, Status> {
    match behaviour {
        Behaviour::Echo => answer(ResultKind::Json, event),
        Behaviour::Answer(kind, body) => answer(kind, body),
        Behaviour::Fail(status) => Err(status),
        Behaviour::Sleep(wait, then) => {
            tokio::time::sleep(wait).await;
            Box::pin(act(*then, event)).await
        }
    }
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    type LogsStream = tokio_stream::Empty<Result<LogLine, Status>>;

    async fn execute(&self, _: Request<ExecuteRequest>) -> Result<Response<ExecuteResult>, Status> {
        Err(Status::unimplemented("the fake agent only invokes"))
    }

    async fn deploy(&self, _: Request<DeployRequest>) -> Result<Response<InstanceStatus>, Status> {
        Err(Status::unimplemented("the fake agent only invokes"))
    }

    async fn stop(&self, _: Request<StopRequest>) -> Result<Response<StopResult>, Status> {
        Err(Status::unimplemented("the fake agent only invokes"))
    }

    async fn logs(&self, _: Request<LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(Status::unimplemented("the fake agent only invokes"))
    }

    async fn invoke(&self, req: Request<InvokeRequest>) -> Result<Response<InvokeResult>, Status> {
        if !bearer_ok(&req, self.join_token.as_deref()) {
            return Err(WireError::new(Kind::Unauthenticated, "bad join token").into());
        }
        let req = req.into_inner();
        let behaviour = (self.decide)(&req);
        act(behaviour, req.event).await
    }
}
