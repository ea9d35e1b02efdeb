//! `souq.execute.v1.Execute`: one-shot execution for the caller of an access token, within
//! the caller's executes a minute, handed to `crate::execute`.
use std::sync::Arc;

use souq_proto::execute::{ExecuteRequest, ExecuteResponse, execute_server};
use tonic::Request;
use tracing::instrument;

use super::{Answer, ok, user};
use crate::{execute, state::State};

/// Implements `souq.execute.v1.Execute`.
pub struct ExecuteService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl execute_server::Execute for ExecuteService {
    #[instrument(skip_all)]
    async fn execute(&self, req: Request<ExecuteRequest>) -> Answer<ExecuteResponse> {
        let caller = user(&self.state, &req).await?;
        self.state.execute_rate.admit(&self.state.db, caller).await?;
        ok(execute::run(&self.state.nodes, &self.state.leadership, self.state.default_timeout, caller, req.into_inner()).await)
    }
}
