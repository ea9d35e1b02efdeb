//! The agent's entry point without Docker or a control plane: `run` refuses a bad config
//! before it starts anything, serves on its listener (admitting only the join token),
//! and returns soon after its shutdown token is cancelled, its tasks stopped.
// A test's helpers may panic: that fails the test, which is what they are for.
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use souq_node_agent::{Config, DEFAULT_CPU_OVERCOMMIT, Error, Images, Limits, PoolConfig};
use souq_proto::agent::{StopRequest, agent_client::AgentClient};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "run-shutdown-test-token";

fn config(dir: &std::path::Path) -> Config {
    Config {
        node_name: format!("run-test-{}", std::process::id()),
        region: "test".into(),
        // Nothing listens there: registration keeps failing, as with a control plane down.
        control_plane_url: "http://127.0.0.1:1".into(),
        join_token: TOKEN.into(),
        advertise_addr: None,
        // No Engine either: the agent serves all the same, and says so in its log.
        docker_host: Some("unix:///nonexistent/docker.sock".into()),
        images: Images::new(),
        limits: Limits::DEFAULT,
        max_concurrent: 1,
        queue_depth: 0,
        max_concurrent_per_user: souq_node_agent::config::DEFAULT_MAX_CONCURRENT_PER_USER,
        pool: PoolConfig::DEFAULT,
        channel_dir: dir.join("ch"),
        cpu_overcommit: DEFAULT_CPU_OVERCOMMIT,
        grpc_tls: Default::default(),
    }
}

fn with_bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn serves_then_stops_within_its_grace() {
    let dir = std::env::temp_dir().join(format!("souq-run-{}", std::process::id()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(souq_node_agent::run(config(&dir), listener, shutdown.clone()));

    let mut client = AgentClient::connect(url).await.unwrap();
    let stop = || StopRequest { instance_id: "nothing-here".into() };
    let refused = client.stop(with_bearer(stop(), "not-the-token")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    client.stop(with_bearer(stop(), TOKEN)).await.unwrap();
    assert!(dir.join("ch").is_dir(), "the channel directory is made at start");

    shutdown.cancel();
    let done = tokio::time::timeout(souq_node_agent::SHUTDOWN_GRACE + Duration::from_secs(5), agent).await;
    done.expect("run returns after the shutdown signal").unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_config_is_refused_before_anything_starts() {
    let dir = std::env::temp_dir().join(format!("souq-run-bad-{}", std::process::id()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = Config { join_token: String::new(), ..config(&dir) };
    let err = souq_node_agent::run(cfg, listener, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.starts_with("invalid value for --join-token")), "{err}");
    assert!(!dir.exists(), "nothing was made");
}
