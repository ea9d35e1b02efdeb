//! `souq.metering.v1.Metering`, for the edges: the access table (keys and grants) as a
//! stream that resends the whole table on each change, and the usage the edges report.
//! Every call carries the cluster's join token.
use std::sync::Arc;

use souq_proto::metering::{AccessTable, UsageAck, UsageBatch, WatchAccessRequest, metering_server};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{Answer, join_token, ok, stream_of};
use crate::{market::report, state::State};

/// Implements `souq.metering.v1.Metering`.
pub struct MeteringService {
    /// Every area's state.
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl metering_server::Metering for MeteringService {
    type WatchAccessStream = ReceiverStream<Result<AccessTable, Status>>;

    async fn watch_access(&self, req: Request<WatchAccessRequest>) -> Answer<Self::WatchAccessStream> {
        join_token(&self.state, &req)?;
        Ok(Response::new(stream_of(self.state.market.access.subscribe(), self.state.draining.clone())))
    }

    #[instrument(skip_all, fields(source = %req.get_ref().source.chars().take(128).collect::<String>(), events = req.get_ref().events.len()))]
    async fn report_usage(&self, req: Request<UsageBatch>) -> Answer<UsageAck> {
        join_token(&self.state, &req)?;
        ok(report::report(&self.state.market, req.into_inner()).await)
    }
}
