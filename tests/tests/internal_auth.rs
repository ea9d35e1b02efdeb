//! The internal gRPC services (agent, registry, routes, metering) admit only holders of
//! the join token, even over mutual TLS with a certificate of the right role.
#![allow(clippy::unwrap_used)]

use souq_proto::{
    agent::{ExecuteRequest, agent_client::AgentClient},
    metering::{UsageBatch, WatchAccessRequest, metering_client::MeteringClient},
    registry::{RegisterRequest, registry_client::RegistryClient},
    routes::{WatchRoutesRequest, routes_client::RoutesClient},
    tls::Role,
};
use souq_tests::TestCluster;

fn with_bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn agent_and_registry_refuse_callers_without_the_join_token() {
    let c = TestCluster::builder().start().await;
    let (edge, agent_cert) = (c.issue(Role::Edge, "edge"), c.issue(Role::Agent, "agent-0"));
    let mut agent = AgentClient::new(TestCluster::channel(&edge, &c.agent_urls[0], Role::Agent));
    let run = ExecuteRequest { runtime: "python".into(), code: "print(1)".into(), timeout_ms: 1000, ..Default::default() };
    let err = agent.execute(run.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = agent.execute(with_bearer(run, "a-guess-at-the-token")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let mut registry = RegistryClient::new(TestCluster::channel(&agent_cert, &c.control_plane_url, Role::ControlPlane));
    let join = RegisterRequest {
        node_name: "intruder".into(),
        advertise_addr: "http://127.0.0.1:1".into(),
        runtimes: vec!["python".into()],
        docker_ok: true,
        max_timeout_ms: 1000,
        ..Default::default()
    };
    let err = registry.register(with_bearer(join, "a-guess-at-the-token")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // The edges' feeds: the route table, the access table (every key hash and grant)
    // and usage reports.
    let cp = TestCluster::channel(&edge, &c.control_plane_url, Role::ControlPlane);
    let mut routes = RoutesClient::new(cp.clone());
    let err = routes.watch_routes(with_bearer(WatchRoutesRequest {}, "a-guess-at-the-token")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut metering = MeteringClient::new(cp);
    let err = metering.watch_access(WatchAccessRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let batch = UsageBatch { source: "intruder".into(), batch_id: "intruder/1-0".into(), events: vec![] };
    let err = metering.report_usage(with_bearer(batch, "a-guess-at-the-token")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    c.stop().await;
}
