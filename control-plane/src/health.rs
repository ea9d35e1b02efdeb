//! gRPC health checking (`grpc.health.v1.Health`) over the config's `HealthReporter`:
//! the overall status (`""`) and each service's is SERVING while the server runs and
//! NOT_SERVING once shutdown starts. Any caller the transport admits may ask. Watch
//! streams end shortly after shutdown starts, so they do not hold the server's drain.
use std::{pin::Pin, time::Duration};

use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, HealthCheckResponse, health_server},
    server::{HealthReporter, HealthService},
};

/// How long a watch stream lives on once shutdown starts: time to tell NOT_SERVING.
const WATCH_LINGER: Duration = Duration::from_millis(200);

/// The health service: tonic-health's, with watch streams that end at shutdown.
pub(crate) struct Health {
    inner: HealthService,
    draining: CancellationToken,
}

impl Health {
    /// The service over `reporter`'s statuses; watches end once `draining` is cancelled.
    pub(crate) fn new(reporter: &HealthReporter, draining: CancellationToken) -> Health {
        Health { inner: HealthService::from_health_reporter(reporter.clone()), draining }
    }
}

/// The server of [`Health::new`].
pub(crate) fn server(reporter: &HealthReporter, draining: CancellationToken) -> health_server::HealthServer<Health> {
    health_server::HealthServer::new(Health::new(reporter, draining))
}

/// Sets the overall status (`""`) and that of every service in `names` to `status`.
pub(crate) async fn set_all(reporter: &HealthReporter, names: &[&str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// A watch stream of statuses.
type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl health_server::Health for Health {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        health_server::Health::check(&self.inner, req).await
    }

    type WatchStream = Statuses;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = health_server::Health::watch(&self.inner, req).await?.into_inner();
        let draining = self.draining.clone();
        let ended = async move {
            draining.cancelled().await;
            tokio::time::sleep(WATCH_LINGER).await;
        };
        Ok(Response::new(Box::pin(statuses.take_until(ended))))
    }
}
