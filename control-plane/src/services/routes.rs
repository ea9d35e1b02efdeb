//! `souq.routes.v1.Routes`, for the edges: the route table as a stream that resends the
//! whole table on each change. Every call carries the cluster's join token.
use std::sync::Arc;

use souq_proto::routes::{RouteTable, WatchRoutesRequest, routes_server};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::{Answer, join_token, stream_of};
use crate::state::State;

/// Implements `souq.routes.v1.Routes`.
pub struct RoutesService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl routes_server::Routes for RoutesService {
    type WatchRoutesStream = ReceiverStream<Result<RouteTable, Status>>;

    async fn watch_routes(&self, req: Request<WatchRoutesRequest>) -> Answer<Self::WatchRoutesStream> {
        join_token(&self.state, &req)?;
        Ok(tonic::Response::new(stream_of(self.state.deployer.routes.subscribe(), self.state.draining.clone())))
    }
}
