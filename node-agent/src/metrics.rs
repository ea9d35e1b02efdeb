//! The agent's Prometheus metrics: executes and invokes by outcome with their latency,
//! admission and warm pools, instances by state, Docker Engine errors, and the sandboxes
//! the kernel's OOM killer or a timeout ended. Every label value is a fixed word or a
//! runtime's name, so the series stay bounded.
use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use souq_proto::{Kind, Runtime, agent::ExecuteResult, metrics::latency_histogram};

use crate::error::Error;

/// Executes by runtime and outcome (exposed as `souq_agent_executes_total`).
pub const EXECUTES: &str = "souq_agent_executes";
/// Execute latency by runtime, from the request to the answer, refusals included.
pub const EXECUTE_DURATION: &str = "souq_agent_execute_duration_seconds";
/// Invokes by outcome (exposed as `souq_agent_invokes_total`).
pub const INVOKES: &str = "souq_agent_invokes";
/// Invoke latency, from the request to the answer, refusals included.
pub const INVOKE_DURATION: &str = "souq_agent_invoke_duration_seconds";
/// Executes admitted but not running yet: waiting for a slot or for the user's sandbox.
pub const ADMISSION_QUEUE_DEPTH: &str = "souq_agent_admission_queue_depth";
/// Most executes that may wait (`--queue-depth`); past it and the running slots, 503.
pub const ADMISSION_QUEUE_CAPACITY: &str = "souq_agent_admission_queue_capacity";
/// Executes holding a running slot now (at most `--max-concurrent`).
pub const RUNNING_EXECUTES: &str = "souq_agent_running_executes";
/// Idle warm sandboxes by runtime.
pub const WARM_SANDBOXES: &str = "souq_agent_warm_sandboxes";
/// Instances this node holds, by state.
pub const INSTANCES: &str = "souq_agent_instances";
/// Failed Docker Engine requests by operation (exposed with `_total`).
pub const DOCKER_ERRORS: &str = "souq_agent_docker_errors";
/// Sandboxes (sessions and instances) the OOM killer ended, by runtime (exposed with `_total`).
pub const SANDBOX_OOM_KILLS: &str = "souq_agent_sandbox_oom_kills";
/// Executes and invokes that ran out of time, by runtime (exposed with `_total`).
pub const SANDBOX_TIMEOUTS: &str = "souq_agent_sandbox_timeouts";

/// The labels of [`EXECUTES`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecuteLabels {
    /// The runtime's name (`python`, `nodejs`, `go`), or `unknown` for a request naming none.
    pub runtime: &'static str,
    /// One of [`ExecuteOutcome`]'s words.
    pub outcome: &'static str,
}

/// A runtime label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuntimeLabels {
    /// The runtime's name, or `unknown`.
    pub runtime: &'static str,
}

/// An outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// One of [`InvokeOutcome`]'s words.
    pub outcome: &'static str,
}

/// An instance state label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `starting`, `running`, `crashed` or `failed`.
    pub state: &'static str,
}

/// A Docker Engine operation label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// A fixed word, see [`crate::docker::engine::Operation`].
    pub operation: &'static str,
}

/// How an execute ended, as [`EXECUTES`] counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecuteOutcome {
    /// The program exited with code 0.
    Ok,
    /// The program exited with another code or was killed by a signal.
    Error,
    /// The program ran out of time.
    Timeout,
    /// The kernel's OOM killer ended it.
    Oom,
    /// Turned away before it ran: admission, the per-user cap, no image, a stale leader.
    Refused,
    /// A request the caller must fix: unknown runtime, bad timeout, code or stdin.
    Invalid,
    /// The agent or the Engine failed.
    Failed,
}

impl ExecuteOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecuteOutcome::Ok => "ok",
            ExecuteOutcome::Error => "error",
            ExecuteOutcome::Timeout => "timeout",
            ExecuteOutcome::Oom => "oom",
            ExecuteOutcome::Refused => "refused",
            ExecuteOutcome::Invalid => "invalid",
            ExecuteOutcome::Failed => "failed",
        }
    }

    /// The outcome of a run that answered.
    pub fn of_result(r: &ExecuteResult) -> Self {
        if r.oom_killed {
            ExecuteOutcome::Oom
        } else if r.timed_out {
            ExecuteOutcome::Timeout
        } else if r.exit_code == Some(0) && r.signal.is_none() {
            ExecuteOutcome::Ok
        } else {
            ExecuteOutcome::Error
        }
    }

    /// The outcome of an execute that failed with `e`.
    pub fn of_error(e: &Error) -> Self {
        match e {
            Error::Wire(w) if w.kind == Kind::Validation => ExecuteOutcome::Invalid,
            Error::Wire(w) if w.kind == Kind::Internal => ExecuteOutcome::Failed,
            Error::Wire(_) => ExecuteOutcome::Refused,
            Error::DockerUnavailable(_) | Error::Docker(_) | Error::Config(_) | Error::Internal(_) => {
                ExecuteOutcome::Failed
            }
        }
    }
}

/// How an invoke ended, as [`INVOKES`] counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvokeOutcome {
    /// The handler returned a value.
    Ok,
    /// The handler raised or returned an error.
    Error,
    /// The handler did not answer in time.
    Timeout,
    /// The handler's answer was over the output limit.
    TooLarge,
    /// Refused having run nothing: no such instance, not serving, too many calls, draining.
    Refused,
    /// Anything else: the instance stopped serving during the call, an internal error.
    Failed,
}

impl InvokeOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            InvokeOutcome::Ok => "ok",
            InvokeOutcome::Error => "error",
            InvokeOutcome::Timeout => "timeout",
            InvokeOutcome::TooLarge => "too_large",
            InvokeOutcome::Refused => "refused",
            InvokeOutcome::Failed => "failed",
        }
    }

    /// The outcome of an invoke that failed with `error`, having run nothing of the call
    /// when `ran_nothing`.
    pub fn of_error(error: &Error, ran_nothing: bool) -> Self {
        match error {
            _ if ran_nothing => InvokeOutcome::Refused,
            Error::Wire(w) if w.kind == Kind::Timeout => InvokeOutcome::Timeout,
            Error::Wire(w) if w.kind == Kind::ResponseTooLarge => InvokeOutcome::TooLarge,
            _ => InvokeOutcome::Failed,
        }
    }
}

/// The label value of `runtime`.
pub fn runtime_label(runtime: Option<Runtime>) -> &'static str {
    runtime.map_or("unknown", Runtime::as_str)
}

/// The agent's metric families. [`Default`] makes fresh, unregistered ones (tests);
/// [`Metrics::register`] the ones a process serves.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// [`EXECUTES`].
    pub executes: Family<ExecuteLabels, Counter>,
    /// [`EXECUTE_DURATION`].
    pub execute_duration: Family<RuntimeLabels, Histogram, fn() -> Histogram>,
    /// [`INVOKES`].
    pub invokes: Family<OutcomeLabels, Counter>,
    /// [`INVOKE_DURATION`].
    pub invoke_duration: Histogram,
    /// [`ADMISSION_QUEUE_DEPTH`].
    pub admission_queue_depth: Gauge,
    /// [`ADMISSION_QUEUE_CAPACITY`].
    pub admission_queue_capacity: Gauge,
    /// [`RUNNING_EXECUTES`].
    pub running_executes: Gauge,
    /// [`WARM_SANDBOXES`].
    pub warm_sandboxes: Family<RuntimeLabels, Gauge>,
    /// [`INSTANCES`].
    pub instances: Family<StateLabels, Gauge>,
    /// [`DOCKER_ERRORS`].
    pub docker_errors: Family<OperationLabels, Counter>,
    /// [`SANDBOX_OOM_KILLS`].
    pub sandbox_oom_kills: Family<RuntimeLabels, Counter>,
    /// [`SANDBOX_TIMEOUTS`].
    pub sandbox_timeouts: Family<RuntimeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            executes: Family::default(),
            execute_duration: Family::new_with_constructor(latency_histogram),
            invokes: Family::default(),
            invoke_duration: latency_histogram(),
            admission_queue_depth: Gauge::default(),
            admission_queue_capacity: Gauge::default(),
            running_executes: Gauge::default(),
            warm_sandboxes: Family::default(),
            instances: Family::default(),
            docker_errors: Family::default(),
            sandbox_oom_kills: Family::default(),
            sandbox_timeouts: Family::default(),
        }
    }
}

impl Metrics {
    /// Fresh families, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(EXECUTES, "Executes by runtime and outcome", m.executes.clone());
        registry.register(EXECUTE_DURATION, "Execute latency in seconds by runtime", m.execute_duration.clone());
        registry.register(INVOKES, "Invokes of deployed APIs' instances by outcome", m.invokes.clone());
        registry.register(INVOKE_DURATION, "Invoke latency in seconds", m.invoke_duration.clone());
        registry.register(ADMISSION_QUEUE_DEPTH, "Executes admitted and not running yet", m.admission_queue_depth.clone());
        registry.register(ADMISSION_QUEUE_CAPACITY, "Most executes that may wait", m.admission_queue_capacity.clone());
        registry.register(RUNNING_EXECUTES, "Executes running now", m.running_executes.clone());
        registry.register(WARM_SANDBOXES, "Idle warm sandboxes by runtime", m.warm_sandboxes.clone());
        registry.register(INSTANCES, "Instances on this node by state", m.instances.clone());
        registry.register(DOCKER_ERRORS, "Failed Docker Engine requests by operation", m.docker_errors.clone());
        registry.register(SANDBOX_OOM_KILLS, "Sandboxes ended by the OOM killer by runtime", m.sandbox_oom_kills.clone());
        registry.register(SANDBOX_TIMEOUTS, "Executes and invokes that timed out by runtime", m.sandbox_timeouts.clone());
        m
    }

    /// Counts one execute of `runtime` that ended as `outcome` after `elapsed`; an OOM
    /// kill or a timeout counts as the sandbox's too.
    pub fn executed(&self, runtime: &'static str, outcome: ExecuteOutcome, elapsed: Duration) {
        self.executes.get_or_create(&ExecuteLabels { runtime, outcome: outcome.as_str() }).inc();
        self.execute_duration.get_or_create(&RuntimeLabels { runtime }).observe(elapsed.as_secs_f64());
        match outcome {
            ExecuteOutcome::Oom => self.oom_killed(runtime),
            ExecuteOutcome::Timeout => self.timed_out(runtime),
            _ => {}
        }
    }

    /// Counts one invoke that ended as `outcome` after `elapsed`.
    pub fn invoked(&self, outcome: InvokeOutcome, elapsed: Duration) {
        self.invokes.get_or_create(&OutcomeLabels { outcome: outcome.as_str() }).inc();
        self.invoke_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a sandbox of `runtime` ended by the OOM killer.
    pub fn oom_killed(&self, runtime: &'static str) {
        self.sandbox_oom_kills.get_or_create(&RuntimeLabels { runtime }).inc();
    }

    /// Counts a run of `runtime` that ran out of time.
    pub fn timed_out(&self, runtime: &'static str) {
        self.sandbox_timeouts.get_or_create(&RuntimeLabels { runtime }).inc();
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
