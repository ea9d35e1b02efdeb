//! A fake of the control plane's `Routes`: `WatchRoutes` serves the route tables of a
//! [`Feed`].
use souq_proto::{
    Kind, WireError,
    routes::{
        RouteTable, WatchRoutesRequest,
        routes_server::{Routes, RoutesServer},
    },
};
use tonic::{Request, Response, Status};

use crate::{Feed, Served, bearer_ok, feed::TableStream, serve};

/// A fake `Routes`. Cheap to clone; clones share the feed.
#[derive(Clone)]
pub struct FakeRoutes {
    feed: Feed<RouteTable>,
    join_token: Option<String>,
}

impl FakeRoutes {
    /// Serves `feed` to every `WatchRoutes`.
    pub fn new(feed: Feed<RouteTable>) -> Self {
        FakeRoutes { feed, join_token: None }
    }

    /// Refuses subscriptions that do not carry `token` as their bearer (UNAUTHENTICATED).
    pub fn expecting_join_token(mut self, token: &str) -> Self {
        self.join_token = Some(token.to_owned());
        self
    }

    /// The feed, to count subscriptions.
    pub fn feed(&self) -> &Feed<RouteTable> {
        &self.feed
    }

    /// The gRPC service, to serve beside others with [`crate::serve`].
    pub fn service(&self) -> RoutesServer<FakeRoutes> {
        RoutesServer::new(self.clone())
    }

    /// Serves it alone on a loopback port.
    pub async fn serve(&self) -> Served {
        serve(tonic::service::Routes::new(self.service())).await
    }
}

#[tonic::async_trait]
impl Routes for FakeRoutes {
    type WatchRoutesStream = TableStream<RouteTable>;

    async fn watch_routes(
        &self,
        req: Request<WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        if !bearer_ok(&req, self.join_token.as_deref()) {
            return Err(WireError::new(Kind::Unauthenticated, "bad join token").into());
        }
        Ok(Response::new(self.feed.subscribe()))
    }
}
