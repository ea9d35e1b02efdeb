//! The internal gRPC links are mutual TLS with one CA, and each role holds a certificate
//! of its own: a client without one is refused, each service admits only the roles that
//! call it, and a node name belongs to the agent identity that registered it first.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use souq_proto::{
    accounts::{GetVerifyingKeyRequest, accounts_client::AccountsClient},
    agent::{ExecuteRequest, agent_client::AgentClient},
    metering::{WatchAccessRequest, metering_client::MeteringClient},
    registry::{RegisterRequest, registry_client::RegistryClient},
    routes::{WatchRoutesRequest, routes_client::RoutesClient},
    tls::{Pki, Role},
};
use souq_tests::TestCluster;
use tonic::{
    Code,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};

fn with_bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    souq_proto::set_bearer(&mut req, token);
    req
}

fn register(node_name: &str, advertise_addr: &str) -> RegisterRequest {
    RegisterRequest {
        node_name: node_name.into(),
        advertise_addr: advertise_addr.into(),
        runtimes: vec!["python".into()],
        docker_ok: true,
        max_timeout_ms: 1000,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let c = TestCluster::builder().start().await;
    // Plain text, as every client was before.
    for url in [&c.control_plane_url, &c.agent_urls[0]] {
        let plain = Endpoint::from_shared(url.clone()).unwrap().connect_lazy();
        let err = AccountsClient::new(plain).get_verifying_key(GetVerifyingKeyRequest {}).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok, "{url}: {err}");
    }
    // TLS that trusts the cluster's CA but shows no certificate: the handshake fails.
    let ca = Certificate::from_pem(std::fs::read(c.tls_dir.join("ca.pem")).unwrap());
    let anonymous = |url: &str, server: Role| {
        let tls = ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name(server.dns_name());
        Endpoint::from_shared(url.replace("http://", "https://")).unwrap().tls_config(tls).unwrap().connect_lazy()
    };
    let cp = anonymous(&c.control_plane_url, Role::ControlPlane);
    assert!(AccountsClient::new(cp.clone()).get_verifying_key(GetVerifyingKeyRequest {}).await.is_err());
    let err = RegistryClient::new(cp).register(with_bearer(register("anon", "http://127.0.0.1:1"), c.join_token())).await;
    assert!(err.is_err(), "an anonymous client registered a node");
    let agent = anonymous(&c.agent_urls[0], Role::Agent);
    let run = ExecuteRequest { runtime: "python".into(), code: "print(1)".into(), timeout_ms: 1000, ..Default::default() };
    assert!(AgentClient::new(agent).execute(with_bearer(run, c.join_token())).await.is_err());
    // A certificate of another CA, for the right role, is no better.
    let other = Pki::open_or_create(&c.data_dir.join("other-ca")).unwrap();
    let stranger = other.issue(Role::Edge, "edge", 30).unwrap().load().unwrap();
    let cp = TestCluster::channel(&stranger, &c.control_plane_url, Role::ControlPlane);
    assert!(AccountsClient::new(cp).get_verifying_key(GetVerifyingKeyRequest {}).await.is_err());
    // And a client checks the server's role: the control plane is no agent.
    let edge = c.issue(Role::Edge, "edge");
    let wrong = TestCluster::channel(&edge, &c.control_plane_url, Role::Agent);
    assert!(AccountsClient::new(wrong).get_verifying_key(GetVerifyingKeyRequest {}).await.is_err());
    // The edge's own certificate works.
    let cp = TestCluster::channel(&edge, &c.control_plane_url, Role::ControlPlane);
    AccountsClient::new(cp).get_verifying_key(GetVerifyingKeyRequest {}).await.unwrap();
    c.stop().await;
}

#[tokio::test]
async fn an_edge_certificate_calling_register_is_refused() {
    let c = TestCluster::builder().start().await;
    let edge = c.issue(Role::Edge, "edge");
    let mut registry = RegistryClient::new(TestCluster::channel(&edge, &c.control_plane_url, Role::ControlPlane));
    // With the join token, under the name of a live node, at the edge's own address.
    let err = registry.register(with_bearer(register(&c.nodes[0], "http://127.0.0.1:1"), c.join_token())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = registry.register(with_bearer(register("edge-node", "http://127.0.0.1:1"), c.join_token())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    c.stop().await;
}

#[tokio::test]
async fn an_agent_certificate_calling_an_edge_service_is_refused() {
    let c = TestCluster::builder().start().await;
    let agent = c.issue(Role::Agent, "agent-0");
    let cp = TestCluster::channel(&agent, &c.control_plane_url, Role::ControlPlane);
    let err = AccountsClient::new(cp.clone()).get_verifying_key(GetVerifyingKeyRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = RoutesClient::new(cp.clone()).watch_routes(with_bearer(WatchRoutesRequest {}, c.join_token())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = MeteringClient::new(cp).watch_access(with_bearer(WatchAccessRequest {}, c.join_token())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // Nor may an agent call an agent.
    let mut other = AgentClient::new(TestCluster::channel(&agent, &c.agent_urls[0], Role::Agent));
    let run = ExecuteRequest { runtime: "python".into(), code: "print(1)".into(), timeout_ms: 1000, ..Default::default() };
    let err = other.execute(with_bearer(run, c.join_token())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    c.stop().await;
}

#[tokio::test]
async fn a_second_agent_under_an_existing_node_name_is_refused() {
    let c = TestCluster::builder().start().await;
    let token = c.user().await;
    let (status, body) = c.execute(&token, json!({"runtime": "python", "code": "print(6*7)"})).await;
    assert_eq!((status, body["stdout"].as_str()), (200, Some("42\n")), "{body}");

    // Another agent identity (a valid agent certificate with its own key) claims the
    // node's name to take its traffic: refused.
    let intruder = c.issue(Role::Agent, "intruder");
    let mut registry = RegistryClient::new(TestCluster::channel(&intruder, &c.control_plane_url, Role::ControlPlane));
    let err = registry.register(with_bearer(register(&c.nodes[0], "http://127.0.0.1:1"), c.join_token())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    // The node still takes the users' work.
    let (status, body) = c.execute(&token, json!({"runtime": "python", "code": "print(6*7)"})).await;
    assert_eq!((status, body["stdout"].as_str()), (200, Some("42\n")), "{body}");
    // The node's own identity, with a renewed certificate (same key), registers again.
    let owner = c.issue(Role::Agent, "agent-0");
    let mut registry = RegistryClient::new(TestCluster::channel(&owner, &c.control_plane_url, Role::ControlPlane));
    registry.register(with_bearer(register(&c.nodes[0], &c.agent_urls[0]), c.join_token())).await.unwrap();
    c.stop().await;
}
