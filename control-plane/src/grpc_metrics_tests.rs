//! The gRPC meter on a real tonic server: answers, trailers-only errors, interceptor
//! refusals and streams are counted by method and code; labels stay bounded. The health
//! service it serves answers SERVING, then NOT_SERVING.
#![allow(clippy::unwrap_used)]

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Endpoint};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_check_response::ServingStatus as Wire, health_client::HealthClient, health_server::HealthServer},
    server::HealthReporter,
};

use super::*;
use crate::{
    health,
    metrics::{GrpcLabels, Metrics},
};

const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";

fn count(m: &Metrics, method: &str, code: &'static str) -> u64 {
    m.grpc_requests.get_or_create(&GrpcLabels { method: method.into(), code }).get()
}

fn check(service: &str) -> Request<HealthCheckRequest> {
    Request::new(HealthCheckRequest { service: service.into() })
}

/// Refuses calls that carry `x-refuse`, as a role check would.
fn refuse_marked(req: Request<()>) -> Result<Request<()>, Status> {
    if req.metadata().contains_key("x-refuse") { Err(Status::permission_denied("refused")) } else { Ok(req) }
}

#[test]
fn method_labels_are_bounded() {
    let meter = Meter::new(Arc::default());
    let svc = "grpc.health.v1.Health";
    assert_eq!(meter.label(svc, CHECK, Code::Ok), CHECK);
    assert_eq!(meter.label(svc, CHECK, Code::NotFound), CHECK);
    assert_eq!(meter.label(svc, "/grpc.health.v1.Health/Nope", Code::Unimplemented), UNKNOWN);
    assert_eq!(meter.label(svc, "/other.Svc/Check", Code::Ok), UNKNOWN);
    assert_eq!(meter.label(svc, "/grpc.health.v1.Health/a-b", Code::PermissionDenied), UNKNOWN);
    assert_eq!(meter.label(svc, &format!("/{svc}/{}", "x".repeat(65)), Code::Ok), UNKNOWN);
    for i in 0..MAX_METHODS {
        meter.label(svc, &format!("/{svc}/M{i}"), Code::Ok);
    }
    assert_eq!(meter.label(svc, "/grpc.health.v1.Health/OneTooMany", Code::Ok), UNKNOWN);
    assert_eq!(meter.label(svc, CHECK, Code::Ok), CHECK, "a method seen before keeps its label");
    assert_eq!((code_name(Code::Ok), code_name(Code::NotFound), code_name(Code::Unauthenticated)), ("OK", "NotFound", "Unauthenticated"));
}

#[tokio::test]
async fn a_served_health_service_is_counted_and_answers_serving() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let meter = Meter::new(metrics.clone());
    let reporter = HealthReporter::new();
    health::set_all(&reporter, &["souq.test.v1.Svc"], ServingStatus::Serving).await;
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = HealthServer::with_interceptor(health::Health::new(&reporter, stop.clone()), refuse_marked);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(meter.wrap(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.clone().cancelled_owned()),
    );
    let mut client = HealthClient::new(Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy());

    // An answer, a trailers-only error, a refusal by the interceptor.
    let overall = client.check(check("")).await.unwrap().into_inner();
    assert_eq!(overall.status(), Wire::Serving);
    assert_eq!(client.check(check("souq.test.v1.Svc")).await.unwrap().into_inner().status(), Wire::Serving);
    assert_eq!(client.check(check("nope")).await.unwrap_err().code(), Code::NotFound);
    let mut marked = check("");
    marked.metadata_mut().insert("x-refuse", "1".parse().unwrap());
    assert_eq!(client.check(marked).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(count(&metrics, CHECK, "OK"), 2);
    assert_eq!(count(&metrics, CHECK, "NotFound"), 1);
    assert_eq!(count(&metrics, CHECK, "PermissionDenied"), 1);

    // A stream counts once its response starts, while it is still open.
    let mut watch = client.watch(check("")).await.unwrap().into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), Wire::Serving);
    assert_eq!(count(&metrics, WATCH, "OK"), 1);

    // Shutdown: NOT_SERVING is told, then the watch ends and the server drains.
    health::set_all(&reporter, &["souq.test.v1.Svc"], ServingStatus::NotServing).await;
    assert_eq!(client.check(check("")).await.unwrap().into_inner().status(), Wire::NotServing);
    assert_eq!(watch.message().await.unwrap().unwrap().status(), Wire::NotServing);
    stop.cancel();
    assert!(watch.message().await.map_or(true, |m| m.is_none()), "the watch ends at shutdown");
    drop(client);
    tokio::time::timeout(std::time::Duration::from_secs(10), server).await.expect("the server drains").unwrap().unwrap();

    let text = souq_proto::metrics::encode(&registry);
    let line = format!("souq_control_plane_grpc_request_duration_seconds_count{{method=\"{CHECK}\"}} 5");
    assert!(text.contains(&line), "{line} missing from:\n{text}");
}
