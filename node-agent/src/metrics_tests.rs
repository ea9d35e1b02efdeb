//! The metric names and labels as Prometheus sees them, and how outcomes are told apart.
use souq_proto::WireError;

use super::*;

fn result(exit_code: Option<i32>, timed_out: bool, oom_killed: bool, signal: Option<i32>) -> ExecuteResult {
    ExecuteResult { exit_code, timed_out, oom_killed, signal, ..Default::default() }
}

#[test]
fn execute_outcomes() {
    assert_eq!(ExecuteOutcome::of_result(&result(Some(0), false, false, None)), ExecuteOutcome::Ok);
    assert_eq!(ExecuteOutcome::of_result(&result(Some(1), false, false, None)), ExecuteOutcome::Error);
    assert_eq!(ExecuteOutcome::of_result(&result(None, false, false, Some(11))), ExecuteOutcome::Error);
    assert_eq!(ExecuteOutcome::of_result(&result(None, true, false, Some(9))), ExecuteOutcome::Timeout);
    assert_eq!(ExecuteOutcome::of_result(&result(None, true, true, Some(9))), ExecuteOutcome::Oom, "OOM first");
    let wire = |kind| Error::Wire(WireError::new(kind, "x"));
    assert_eq!(ExecuteOutcome::of_error(&wire(Kind::NoCapacity)), ExecuteOutcome::Refused);
    assert_eq!(ExecuteOutcome::of_error(&wire(Kind::TooManyConcurrent)), ExecuteOutcome::Refused);
    assert_eq!(ExecuteOutcome::of_error(&wire(Kind::Validation)), ExecuteOutcome::Invalid);
    assert_eq!(ExecuteOutcome::of_error(&Error::DockerUnavailable("down".into())), ExecuteOutcome::Failed);
    assert_eq!(ExecuteOutcome::of_error(&Error::Internal("bug".into())), ExecuteOutcome::Failed);
}

#[test]
fn invoke_outcomes() {
    let wire = |kind| Error::Wire(WireError::new(kind, "x"));
    assert_eq!(InvokeOutcome::of_error(&wire(Kind::NotFound), true), InvokeOutcome::Refused);
    assert_eq!(InvokeOutcome::of_error(&wire(Kind::Timeout), false), InvokeOutcome::Timeout);
    assert_eq!(InvokeOutcome::of_error(&wire(Kind::ResponseTooLarge), false), InvokeOutcome::TooLarge);
    assert_eq!(InvokeOutcome::of_error(&wire(Kind::Unavailable), false), InvokeOutcome::Failed);
}

#[test]
fn the_registry_shows_every_name_with_its_labels() {
    let mut registry = Registry::default();
    let m = Metrics::register(&mut registry);
    m.executed("python", ExecuteOutcome::Ok, Duration::from_millis(30));
    m.executed("go", ExecuteOutcome::Oom, Duration::from_millis(30));
    m.executed("nodejs", ExecuteOutcome::Timeout, Duration::from_secs(2));
    m.invoked(InvokeOutcome::Ok, Duration::from_millis(3));
    m.admission_queue_capacity.set(32);
    m.warm_sandboxes.get_or_create(&RuntimeLabels { runtime: "python" }).set(2);
    m.instances.get_or_create(&StateLabels { state: "running" }).set(1);
    m.docker_errors.get_or_create(&OperationLabels { operation: "create" }).inc();
    let text = souq_proto::metrics::encode(&registry);
    for line in [
        r#"souq_agent_executes_total{runtime="python",outcome="ok"} 1"#,
        r#"souq_agent_execute_duration_seconds_count{runtime="python"} 1"#,
        r#"souq_agent_execute_duration_seconds_bucket{le="0.05",runtime="python"} 1"#,
        r#"souq_agent_invokes_total{outcome="ok"} 1"#,
        "souq_agent_invoke_duration_seconds_count 1",
        "souq_agent_admission_queue_depth 0",
        "souq_agent_admission_queue_capacity 32",
        "souq_agent_running_executes 0",
        r#"souq_agent_warm_sandboxes{runtime="python"} 2"#,
        r#"souq_agent_instances{state="running"} 1"#,
        r#"souq_agent_docker_errors_total{operation="create"} 1"#,
        r#"souq_agent_sandbox_oom_kills_total{runtime="go"} 1"#,
        r#"souq_agent_sandbox_timeouts_total{runtime="nodejs"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}
