//! The `Routes` service, for the edges: the route table and the access table as streams
//! that resend the whole table on each change, and the usage they report. Every call
//! carries the cluster's join token.
use std::sync::Arc;

use souq_proto::{
    Kind,
    routes::{AccessTable, RouteTable, UsageAck, UsageBatch, WatchAccessRequest, WatchRoutesRequest, routes_server},
};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::{State, error::Error, market};

/// Implements `souq.routes.v1.Routes`.
pub struct RoutesService {
    pub(crate) state: Arc<State>,
}

impl RoutesService {
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if souq_proto::bearer_is(req.metadata(), &self.state.join_token) {
            Ok(())
        } else {
            Err(Error::kind(Kind::Unauthenticated, "invalid join token").into())
        }
    }
}

/// Streams the current table, then each newer one, until the caller goes away. A slow
/// caller skips the tables it had no time for and gets the newest.
fn stream_of<T: Clone + Send + Sync + 'static>(mut rx: watch::Receiver<Arc<T>>) -> ReceiverStream<Result<T, Status>> {
    let (tx, out) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let table = T::clone(&rx.borrow_and_update());
            if tx.send(Ok(table)).await.is_err() {
                return;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    ReceiverStream::new(out)
}

#[tonic::async_trait]
impl routes_server::Routes for RoutesService {
    type WatchRoutesStream = ReceiverStream<Result<RouteTable, Status>>;
    type WatchAccessStream = ReceiverStream<Result<AccessTable, Status>>;

    async fn watch_routes(&self, req: Request<WatchRoutesRequest>) -> Result<Response<Self::WatchRoutesStream>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(stream_of(self.state.routes.subscribe())))
    }

    async fn watch_access(&self, req: Request<WatchAccessRequest>) -> Result<Response<Self::WatchAccessStream>, Status> {
        self.authorize(&req)?;
        Ok(Response::new(stream_of(self.state.access.subscribe())))
    }

    #[instrument(skip_all, fields(source = %req.get_ref().source.chars().take(128).collect::<String>(), events = req.get_ref().events.len()))]
    async fn report_usage(&self, req: Request<UsageBatch>) -> Result<Response<UsageAck>, Status> {
        self.authorize(&req)?;
        market::report::report(&self.state, req.into_inner()).await.map(Response::new).map_err(Status::from)
    }
}
