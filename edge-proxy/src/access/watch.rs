//! Follows `Routes.WatchAccess` on the control plane for as long as the edge runs,
//! reconnecting with backoff; while it is away, the last table keeps serving (it is never
//! cleared: a revocation arrives as a new table, which the control plane sends at once).
use std::sync::Arc;

use souq_proto::routes::{AccessTable, WatchAccessRequest, routes_client::RoutesClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::debug;

use super::Access;
use crate::routing::watch::{MAX_TABLE_BYTES, follow_stream};

/// Subscribes to the access table until `shutdown`, installing every table into `access`.
pub async fn follow(access: Arc<Access>, channel: Channel, join_token: String, shutdown: CancellationToken) {
    let client = RoutesClient::new(channel).max_decoding_message_size(MAX_TABLE_BYTES);
    let open = move || {
        let mut client = client.clone();
        let mut req = tonic::Request::new(WatchAccessRequest {});
        souq_proto::set_bearer(&mut req, &join_token);
        async move { client.watch_access(req).await.map(tonic::Response::into_inner) }
    };
    follow_stream("access", open, shutdown, |table: AccessTable| {
        let generation = table.generation;
        if let Some(t) = access.install(table) {
            debug!(generation, keys = t.key_count(), grants = t.grant_count(), "access table updated");
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicU64, Ordering},
        time::Duration,
    };

    use souq_proto::routes::{
        AccessTable, KeyEntry, RouteTable, UsageAck, UsageBatch, WatchRoutesRequest, routes_server,
    };
    use tonic::{Response, Status};

    use super::*;

    const JOIN: &str = "join-token-0123456789";

    /// Sends one table per subscription, with a growing generation, then ends the stream.
    #[derive(Default)]
    struct OneTablePerWatch {
        served: AtomicU64,
    }

    #[tonic::async_trait]
    impl routes_server::Routes for OneTablePerWatch {
        type WatchRoutesStream = tokio_stream::Empty<Result<RouteTable, Status>>;
        type WatchAccessStream = tokio_stream::Iter<std::vec::IntoIter<Result<AccessTable, Status>>>;

        async fn watch_routes(
            &self,
            _: tonic::Request<WatchRoutesRequest>,
        ) -> Result<Response<Self::WatchRoutesStream>, Status> {
            Err(Status::unimplemented("access only"))
        }

        async fn watch_access(
            &self,
            req: tonic::Request<WatchAccessRequest>,
        ) -> Result<Response<Self::WatchAccessStream>, Status> {
            if !souq_proto::bearer_is(req.metadata(), JOIN) {
                return Err(Status::unauthenticated("bad join token"));
            }
            let generation = self.served.fetch_add(1, Ordering::Relaxed) + 1;
            let key = KeyEntry { sha256: vec![1; 32], key_id: format!("k{generation}"), user_id: "u".into() };
            let table = AccessTable { generation, keys: vec![key], grants: vec![] };
            Ok(Response::new(tokio_stream::iter(vec![Ok(table)])))
        }

        async fn report_usage(&self, _: tonic::Request<UsageBatch>) -> Result<Response<UsageAck>, Status> {
            Err(Status::unimplemented("access only"))
        }
    }

    #[tokio::test]
    async fn resubscribes_and_keeps_the_last_table_when_the_control_plane_goes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(routes_server::RoutesServer::new(OneTablePerWatch::default()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    server_stop.clone().cancelled_owned(),
                ),
        );
        let access = Arc::new(Access::default());
        let channel = tonic::transport::Endpoint::from_shared(url).expect("url").connect_lazy();
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(follow(access.clone(), channel, JOIN.into(), stop.clone()));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while access.snapshot().generation < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second table");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server_stop.cancel();
        let _ = server.await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kept = access.snapshot();
        assert!(kept.generation >= 2 && kept.key(&[1; 32]).is_some(), "the last table is kept");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher ends at shutdown")
            .expect("join");
    }
}
