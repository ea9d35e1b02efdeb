//! The service's counting, without Docker: executes turned away before they reach the
//! Engine, and invokes of instances this node does not hold.
use souq_proto::metrics::{Registry, encode};

use super::*;
use crate::{config::Config, docker::engine, metrics::Metrics};

/// A service whose node has a Python image and an Engine socket (neither used: nothing
/// here reaches the Engine), one running slot and no queue, one execute per user,
/// counting in `registry`.
fn service(dir: &std::path::Path, registry: &mut Registry) -> AgentService {
    std::fs::create_dir_all(dir).unwrap();
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let cfg = Config {
        node_name: "metrics-test".into(),
        region: "test".into(),
        control_plane_url: "http://127.0.0.1:7000".into(),
        join_token: "0123456789abcdef".into(),
        advertise_addr: None,
        docker_host: Some(format!("unix://{}", socket.display())),
        images: [(Runtime::Python, "souq/runtime-python:none".to_owned())].into(),
        limits: crate::Limits::DEFAULT,
        max_concurrent: 1,
        queue_depth: 0,
        max_concurrent_per_user: 1,
        pool: crate::PoolConfig::DEFAULT,
        channel_dir: dir.join("ch"),
        cpu_overcommit: crate::DEFAULT_CPU_OVERCOMMIT,
        grpc_tls: souq_proto::tls::Transport::Insecure,
        metrics: Arc::new(Metrics::register(registry)),
        health: tonic_health::server::HealthReporter::new(),
    };
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 7100));
    AgentService { node: Arc::new(Node::new(cfg, local)), shutdown: CancellationToken::new() }
}

fn execute(runtime: &str, user: &str) -> Request<ExecuteRequest> {
    Request::new(ExecuteRequest {
        runtime: runtime.into(),
        code: "print(1)".into(),
        user_id: user.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn refusals_are_counted_by_runtime_and_outcome() {
    let _held = engine::COUNTER_IN_USE.lock().await;
    let dir = std::env::temp_dir().join(format!("souq-agent-metrics-{}", std::process::id()));
    let mut registry = Registry::default();
    let svc = service(&dir, &mut registry);
    let node = svc.node.clone();
    let agent = &svc as &dyn agent_server::Agent<LogsStream = ReceiverStream<Result<LogLine, Status>>>;

    // The node's one place is taken: admission turns the next one away.
    let ticket = node.admission.enter().expect("a place");
    let busy = agent.execute(execute("python", "a")).await.unwrap_err();
    assert_eq!(busy.code(), tonic::Code::Unavailable, "{busy:?}");
    drop(ticket);
    // User b has an execute already: the per-user cap turns the next one away.
    let turn = node.per_user.enter("b").expect("b's place");
    agent.execute(execute("python", "b")).await.unwrap_err();
    drop(turn);
    // No image for Go; no such runtime as Ruby.
    agent.execute(execute("go", "c")).await.unwrap_err();
    agent.execute(execute("ruby", "c")).await.unwrap_err();
    let missing = InvokeRequest { instance_id: "nothing-here".into(), event: b"{}".to_vec(), timeout_ms: 0 };
    agent.invoke(Request::new(missing)).await.unwrap_err();

    let text = encode(&registry);
    for line in [
        r#"souq_agent_executes_total{runtime="python",outcome="refused"} 2"#,
        r#"souq_agent_executes_total{runtime="go",outcome="refused"} 1"#,
        r#"souq_agent_executes_total{runtime="unknown",outcome="invalid"} 1"#,
        r#"souq_agent_execute_duration_seconds_count{runtime="python"} 2"#,
        r#"souq_agent_invokes_total{outcome="refused"} 1"#,
        "souq_agent_invoke_duration_seconds_count 1",
        "souq_agent_admission_queue_depth 0",
        "souq_agent_admission_queue_capacity 0",
        "souq_agent_running_executes 0",
        r#"souq_agent_instances{state="running"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
