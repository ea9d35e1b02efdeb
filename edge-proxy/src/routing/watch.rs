//! Follows `Routes.WatchRoutes` on the control plane for as long as the edge runs,
//! reconnecting with backoff; while it is away, the last table keeps serving.
use std::{sync::Arc, time::Duration};

use souq_proto::routes::{RouteTable, WatchRoutesRequest, routes_client::RoutesClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::Routing;
use crate::call::agents::AgentClients;

/// First wait after a failed or ended subscription.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest table accepted: the whole table is one message, and it grows with the APIs.
pub const MAX_TABLE_BYTES: usize = 64 * 1024 * 1024;

/// The next wait after `wait`: doubled, at most [`BACKOFF_MAX`].
pub(crate) fn next_backoff(wait: Duration) -> Duration {
    (wait * 2).min(BACKOFF_MAX)
}

/// Subscribes to the route table until `shutdown`, installing every table into `routing`
/// and dropping agent clients that no table names any more.
pub async fn follow(
    routing: Arc<Routing>,
    agents: Arc<AgentClients>,
    channel: Channel,
    join_token: String,
    shutdown: CancellationToken,
) {
    let client = RoutesClient::new(channel).max_decoding_message_size(MAX_TABLE_BYTES);
    let open = move || {
        let mut client = client.clone();
        let mut req = tonic::Request::new(WatchRoutesRequest {});
        souq_proto::set_bearer(&mut req, &join_token);
        async move { client.watch_routes(req).await.map(tonic::Response::into_inner) }
    };
    follow_stream("routes", open, shutdown, |table: RouteTable| {
        let (generation, routes) = (table.generation, table.routes.len());
        if let Some(t) = routing.install(table) {
            agents.retain(t.agent_addrs());
            info!(generation, routes, "route table updated");
        }
    })
    .await;
}

/// Follows one of the control plane's table streams until `shutdown`: `open` subscribes,
/// `install` takes each table. A broken or ended stream is opened again with backoff
/// (200 ms doubling to 5 s); meanwhile the last table installed keeps serving.
pub(crate) async fn follow_stream<T, Open, Fut>(
    what: &'static str,
    mut open: Open,
    shutdown: CancellationToken,
    mut install: impl FnMut(T),
) where
    Open: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Streaming<T>, tonic::Status>>,
{
    let mut wait = BACKOFF_MIN;
    // Log the first failure of a run of failures at warn, the rest at debug.
    let mut failing = false;
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            r = open() => r,
        };
        match opened {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    () = shutdown.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(table)) => {
                        install(table);
                        wait = BACKOFF_MIN;
                        if failing {
                            info!(what, "table stream restored");
                        }
                        failing = false;
                    }
                    Ok(None) => {
                        info!(what, "table stream ended; resubscribing");
                        break;
                    }
                    Err(status) => {
                        warn!(what, code = ?status.code(), "table stream broke; resubscribing, serving the last table");
                        break;
                    }
                }
            },
            Err(status) => {
                if failing {
                    debug!(what, code = ?status.code(), "control plane still unreachable");
                } else {
                    warn!(what, code = ?status.code(), "could not subscribe; serving the last table and retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = next_backoff(wait);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use souq_proto::routes::{Route, RouteTable, routes_server};
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
        type WatchRoutesStream = tokio_stream::Iter<std::vec::IntoIter<Result<RouteTable, Status>>>;
        type WatchAccessStream = tokio_stream::Empty<Result<souq_proto::routes::AccessTable, Status>>;

        async fn watch_access(
            &self,
            _: tonic::Request<souq_proto::routes::WatchAccessRequest>,
        ) -> Result<Response<Self::WatchAccessStream>, Status> {
            Err(Status::unimplemented("routes only"))
        }

        async fn report_usage(
            &self,
            _: tonic::Request<souq_proto::routes::UsageBatch>,
        ) -> Result<Response<souq_proto::routes::UsageAck>, Status> {
            Err(Status::unimplemented("routes only"))
        }

        async fn watch_routes(
            &self,
            req: tonic::Request<WatchRoutesRequest>,
        ) -> Result<Response<Self::WatchRoutesStream>, Status> {
            if !souq_proto::bearer_is(req.metadata(), JOIN) {
                return Err(Status::unauthenticated("bad join token"));
            }
            let generation = self.served.fetch_add(1, Ordering::Relaxed) + 1;
            let route = Route { slug: format!("s{generation}"), timeout_ms: 1000, ..Route::default() };
            let table = RouteTable { generation, routes: vec![route] };
            Ok(Response::new(tokio_stream::iter(vec![Ok(table)])))
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
        let routing = Arc::new(Routing::default());
        let agents = Arc::new(AgentClients::new(JOIN).expect("token"));
        let channel = tonic::transport::Endpoint::from_shared(url).expect("url").connect_lazy();
        let stop = CancellationToken::new();
        let watcher = tokio::spawn(follow(routing.clone(), agents, channel, JOIN.into(), stop.clone()));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while routing.snapshot().generation < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second table");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server_stop.cancel();
        let _ = server.await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kept = routing.snapshot();
        assert!(kept.generation >= 2 && kept.len() == 1, "the last table is kept");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher ends at shutdown")
            .expect("join");
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let mut w = BACKOFF_MIN;
        let mut seen = vec![w];
        for _ in 0..8 {
            w = next_backoff(w);
            seen.push(w);
        }
        assert_eq!(seen[1], Duration::from_millis(400));
        assert_eq!(seen[4], Duration::from_millis(3200));
        assert_eq!(seen[5], BACKOFF_MAX);
        assert_eq!(*seen.last().unwrap_or(&Duration::ZERO), BACKOFF_MAX);
    }
}
