//! The agent's entry point without Docker or a control plane: `run` refuses a bad config
//! before it starts anything, serves on its listener (admitting only the join token),
//! and returns soon after its shutdown token is cancelled, its tasks stopped. Its gRPC
//! health status follows its Engine and says NOT_SERVING as soon as it starts leaving.
// A test's helpers may panic: that fails the test, which is what they are for.
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use souq_node_agent::{Config, DEFAULT_CPU_OVERCOMMIT, Error, Images, Limits, PoolConfig};
use souq_proto::agent::{StopRequest, agent_client::AgentClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UnixListener},
};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
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
        metrics: Default::default(),
        health: Default::default(),
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

/// A stand-in for the Docker Engine at `socket` that answers every request with 200 `OK`:
/// enough for a ping (anything else fails to parse, which the agent survives).
fn fake_engine(socket: &std::path::Path) {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // One answer per request head read; bodies are never sent to it.
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                    let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK";
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Polls the agent's overall health status until it is `want`, for at most 10 s.
async fn health_becomes(url: &str, want: ServingStatus) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    for _ in 0..100 {
        let req = HealthCheckRequest { service: String::new() };
        if client.check(req).await.unwrap().into_inner().status() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the health status never became {want:?}");
}

#[tokio::test]
async fn health_follows_the_engine_and_the_shutdown() {
    let dir = std::env::temp_dir().join(format!("souq-run-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Without an Engine: NOT_SERVING, and the health service needs no join token.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(souq_node_agent::run(config(&dir), listener, shutdown.clone()));
    health_becomes(&url, ServingStatus::NotServing).await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();

    // With an Engine that answers: SERVING, until the agent starts leaving.
    let socket = dir.join("docker.sock");
    fake_engine(&socket);
    let cfg = Config { docker_host: Some(format!("unix://{}", socket.display())), ..config(&dir) };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(souq_node_agent::run(cfg, listener, shutdown.clone()));
    health_becomes(&url, ServingStatus::Serving).await;
    shutdown.cancel();
    // Within the leave grace the agent still serves, and says it is going.
    health_becomes(&url, ServingStatus::NotServing).await;
    agent.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
