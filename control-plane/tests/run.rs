//! `run` end to end on a real port over SQLite: it refuses a bad config before serving,
//! serves every gRPC service with its auth rule (and gRPC health to anyone), counts the
//! requests, and stops (background tasks included) once its token is cancelled, telling
//! health NOT_SERVING.
#![allow(clippy::unwrap_used)]

use std::{path::PathBuf, time::Duration};

use souq_control_plane::{Config, Error, SERVICES, metrics::GrpcLabels, run};
use souq_proto::{
    accounts::{GetVerifyingKeyRequest, MeRequest, accounts_client::AccountsClient},
    apis::{ListApisRequest, apis_client::ApisClient},
    execute::{ExecuteRequest, execute_client::ExecuteClient},
    market::{MarketplaceRequest, market_client::MarketClient},
    metering::{WatchAccessRequest, metering_client::MeteringClient},
    registry::{HeartbeatRequest, registry_client::RegistryClient},
    routes::{WatchRoutesRequest, routes_client::RoutesClient},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, transport::Endpoint};
use tonic_health::{
    pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient, health_server::Health},
    server::HealthService,
};

const JOIN_TOKEN: &str = "run-test-join-token";
const PATIENCE: Duration = Duration::from_secs(30);

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("souq-cp-run-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &std::path::Path) -> Config {
    let url = format!("sqlite://{}?mode=rwc", dir.join("souq.db").display());
    Config::new(url, dir.join("jwt.pem"), JOIN_TOKEN.into(), "http://127.0.0.1".into(), dir.join("mail"))
}

fn with_join_token<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    souq_proto::set_bearer(&mut req, JOIN_TOKEN);
    req
}

#[tokio::test]
async fn a_bad_config_is_refused_before_anything_starts() {
    let dir = temp_dir();
    let mut cfg = config(&dir);
    cfg.max_replicas = 0;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    match run(cfg, listener, CancellationToken::new()).await {
        Err(Error::Config(e)) => assert_eq!(e.option, "--max-replicas"),
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(!dir.join("souq.db").exists(), "no database was made");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn every_service_is_served_with_its_auth_rule_and_run_stops_on_cancel() {
    let dir = temp_dir();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let cfg = config(&dir);
    let (health, metrics) = (cfg.health.clone(), cfg.metrics.clone());
    let server = tokio::spawn(run(cfg, listener, stop.clone()));
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();

    // Health: anyone may ask; the server and every service are SERVING.
    for service in [""].into_iter().chain(SERVICES) {
        let asked = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(asked.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }

    // User-facing services: a call without a token is refused, public reads are not.
    let key = AccountsClient::new(channel.clone()).get_verifying_key(GetVerifyingKeyRequest {}).await.unwrap().into_inner();
    assert_eq!(key.ed25519_public.len(), 32);
    let refused = AccountsClient::new(channel.clone()).me(MeRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = ApisClient::new(channel.clone()).list_apis(ListApisRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = ExecuteClient::new(channel.clone()).execute(ExecuteRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let page = MarketClient::new(channel.clone()).list_marketplace(MarketplaceRequest::default()).await.unwrap().into_inner();
    assert_eq!(page.total, 0);

    // The cluster's own services: the join token or nothing.
    let refused = RoutesClient::new(channel.clone()).watch_routes(WatchRoutesRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = MeteringClient::new(channel.clone()).watch_access(WatchAccessRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let refused = RegistryClient::new(channel.clone()).heartbeat(HeartbeatRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut routes = RoutesClient::new(channel.clone()).watch_routes(with_join_token(WatchRoutesRequest {})).await.unwrap().into_inner();
    assert!(routes.message().await.unwrap().unwrap().routes.is_empty());
    let mut access = MeteringClient::new(channel.clone()).watch_access(with_join_token(WatchAccessRequest {})).await.unwrap().into_inner();
    assert!(access.message().await.unwrap().unwrap().keys.is_empty());
    let beat = RegistryClient::new(channel.clone()).heartbeat(with_join_token(HeartbeatRequest::default())).await.unwrap();
    assert!(beat.into_inner().reregister, "an unknown node is told to register");

    // Requests are counted by method and code; a single replica comes to lead.
    let counted = |method: &str, code| metrics.grpc_requests.get_or_create(&GrpcLabels { method: method.into(), code }).get();
    assert_eq!(counted("/souq.accounts.v1.Accounts/Me", "Unauthenticated"), 1);
    assert_eq!(counted("/souq.accounts.v1.Accounts/GetVerifyingKey", "OK"), 1);
    assert_eq!(counted("/souq.routes.v1.Routes/WatchRoutes", "OK"), 1, "a stream counts when it starts");
    assert_eq!(counted("/grpc.health.v1.Health/Check", "OK"), 9);
    let leads = async {
        while metrics.leader.get() != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, leads).await.expect("the replica leads");
    assert!(metrics.leader_epoch.get() >= 1);

    drop((routes, access, channel));
    stop.cancel();
    let ended = tokio::time::timeout(PATIENCE, server).await.expect("run ends once cancelled");
    ended.unwrap().unwrap();
    let told = HealthService::from_health_reporter(health).check(Request::new(HealthCheckRequest::default())).await.unwrap();
    assert_eq!(told.into_inner().status(), ServingStatus::NotServing, "NOT_SERVING once shutdown starts");
    assert_eq!(metrics.leader.get(), 0, "the lease is given up at shutdown");
    std::fs::remove_dir_all(&dir).unwrap();
}
