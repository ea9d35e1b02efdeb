//! An execute on the real Docker Engine with the real Python image, through `run` and the
//! `Agent` service, is counted in the agent's metrics. Needs Docker and the runtime images,
//! which `scripts/test.sh` provides.
// A test's helpers may panic: that fails the test, which is what they are for.
#![allow(clippy::unwrap_used)]
use std::{sync::Arc, time::Duration};

use souq_node_agent::{Config, DEFAULT_CPU_OVERCOMMIT, Limits, PoolConfig, images, metrics::Metrics};
use souq_proto::{
    Runtime,
    agent::{ExecuteRequest, agent_client::AgentClient},
    metrics::{Registry, encode},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "docker-execute-test-token";

#[tokio::test]
async fn an_execute_is_counted() {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("souq-exec-metrics-{pid}"));
    images::write_sources(&dir.join("runtimes")).unwrap();
    let all = images::tags(&dir.join("runtimes")).await.unwrap();
    let python = all[&Runtime::Python].clone();
    let mut registry = Registry::default();
    let cfg = Config {
        node_name: format!("exec-metrics-{pid}"),
        region: "test".into(),
        // Nothing listens there: registration keeps failing; executes are served all the same.
        control_plane_url: "http://127.0.0.1:1".into(),
        join_token: TOKEN.into(),
        advertise_addr: None,
        docker_host: None,
        images: [(Runtime::Python, python)].into(),
        limits: Limits::DEFAULT,
        max_concurrent: 2,
        queue_depth: 2,
        max_concurrent_per_user: 2,
        pool: PoolConfig { size: 0, ..PoolConfig::DEFAULT },
        channel_dir: dir.join("ch"),
        cpu_overcommit: DEFAULT_CPU_OVERCOMMIT,
        grpc_tls: Default::default(),
        metrics: Arc::new(Metrics::register(&mut registry)),
        health: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(souq_node_agent::run(cfg, listener, shutdown.clone()));

    let mut client = AgentClient::connect(url).await.unwrap();
    let run = |code: &str| {
        let mut req = tonic::Request::new(ExecuteRequest {
            runtime: "python".into(),
            code: code.into(),
            user_id: "u1".into(),
            timeout_ms: 10_000,
            ..Default::default()
        });
        req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        req
    };
    let ok = client.execute(run("print('hi')")).await.unwrap().into_inner();
    assert_eq!((ok.exit_code, ok.stdout.as_slice()), (Some(0), &b"hi\n"[..]));
    let failed = client.execute(run("raise SystemExit(3)")).await.unwrap().into_inner();
    assert_eq!(failed.exit_code, Some(3));

    let text = encode(&registry);
    for line in [
        r#"souq_agent_executes_total{runtime="python",outcome="ok"} 1"#,
        r#"souq_agent_executes_total{runtime="python",outcome="error"} 1"#,
        r#"souq_agent_execute_duration_seconds_count{runtime="python"} 2"#,
        "souq_agent_running_executes 0",
        "souq_agent_admission_queue_depth 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    shutdown.cancel();
    let done = tokio::time::timeout(souq_node_agent::SHUTDOWN_GRACE + Duration::from_secs(5), agent).await;
    done.expect("run returns after the shutdown signal").unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
