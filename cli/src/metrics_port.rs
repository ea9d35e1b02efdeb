//! A role's metrics port: `/metrics` for Prometheus, `/healthz`, and the gRPC health
//! service over h2c for Kubernetes `grpc` probes, in plain text on one listener.
use std::sync::Arc;

use anyhow::Context;
use axum::{http::header, routing::get};
use souq_proto::metrics::Registry;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::{pb::health_server::HealthServer, server::{HealthReporter, HealthService}};
use tracing::info;

/// Serves `registry` and `health` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    health: HealthReporter,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let http = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { ([(header::CONTENT_TYPE, souq_proto::metrics::CONTENT_TYPE)], souq_proto::metrics::encode(&registry)) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let routes = tonic::service::Routes::from(http).add_service(HealthServer::new(HealthService::from_health_reporter(health)));
    info!(%addr, "metrics listening");
    tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
        .await
        .with_context(|| format!("metrics port {addr}"))
}
