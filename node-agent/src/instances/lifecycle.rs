//! One instance of a deployed API, and the supervisor task that keeps it serving:
//!
//! ```text
//! Starting ──ready──► Running ──channel broke / container died / call timed out──► Crashed
//!    │  ▲                                                                            │
//!    │  └─────────────────────────── backoff 1 s, doubling to 60 s ◄─────────────────┘
//!    └──load error──► Failed (kept, not retried, until Stop)
//! ```
//!
//! Stop ends any state: the sandbox is removed and calls in flight fail as unavailable.
//! The sandbox comes from a [`Launcher`], so this module runs without Docker in tests.
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use souq_proto::{
    Kind, WireError,
    agent::{InstanceState, InstanceStatus, InvokeResult},
};
use tokio::{net::UnixStream, sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    gate::InvokeError,
    log_buffer::LogBuffer,
    serve_client::{self, Broken, CallError, LoadError, ServeClient, ServeLimits},
    spec::InstanceSpec,
};
use crate::{
    error::{Error, Result},
    metrics::{Metrics, StateLabels},
};

/// First pause before restarting a crashed instance.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest pause before restarting a crashed instance.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// An instance that served this long before it crashed is restarted after the shortest
/// pause again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(120);
/// Most bytes of the error kept in the status (it travels in every heartbeat); the whole
/// message is in the instance's log.
pub const MAX_STATUS_ERROR: usize = 2048;

/// A boxed future, for the object-safe [`Launcher`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A started sandbox whose shim has connected, not yet loaded.
pub struct Launched {
    /// The agent's end of the channel.
    pub stream: UnixStream,
    /// The sandbox, to find out how it ended and to remove it.
    pub sandbox: Box<dyn LaunchedSandbox>,
}

/// Why a sandbox stopped serving, or never started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// What the agent knows: the exit code, an OOM kill, a broken channel, an Engine
    /// error. Safe for the agent's own log.
    pub what: String,
    /// The last line the handler wrote to stderr: its own words, so they go to its status
    /// and log only, never to the agent's log.
    pub last_stderr: Option<String>,
}

impl Ended {
    /// Only what the agent knows.
    pub fn new(what: impl Into<String>) -> Self {
        Ended { what: what.into(), last_stderr: None }
    }

    /// The whole reason, for the instance's status and log.
    pub fn reason(&self) -> String {
        match &self.last_stderr {
            Some(line) => format!("{}; last stderr line: {line}", self.what),
            None => self.what.clone(),
        }
    }
}

/// Starts instance sandboxes; Docker in production (see `docker_launcher`).
pub trait Launcher: Send + Sync {
    /// Starts a sandbox for `spec` and waits for its shim to connect, feeding its stdout
    /// and stderr into `logs`. On failure nothing is left running.
    fn launch<'a>(&'a self, spec: &'a InstanceSpec, logs: &'a Arc<LogBuffer>) -> BoxFuture<'a, Result<Launched, Ended>>;
}

/// A running instance sandbox; dropping it removes it too, in the background.
pub trait LaunchedSandbox: Send {
    /// How it ended, given why its channel broke: the exit code, an OOM kill, the last
    /// line of stderr, as far as known.
    fn ended<'a>(&'a mut self, broken: &'a Broken) -> BoxFuture<'a, Ended>;
    /// Removes it.
    fn remove(self: Box<Self>) -> BoxFuture<'static, ()>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Phase {
    state: InstanceState,
    error: String,
    restarts: u32,
}

/// One instance on this node.
#[derive(Debug)]
pub struct Instance {
    spec: InstanceSpec,
    phase: watch::Sender<Phase>,
    /// Set while Running; the hot path clones the `Arc` under a short read lock.
    client: RwLock<Option<Arc<ServeClient>>>,
    logs: Arc<LogBuffer>,
    stop: CancellationToken,
    /// Cancelled when the supervisor has returned, its sandbox removed.
    done: CancellationToken,
    /// Where its state is counted while a table holds it; locked around every change of
    /// state, so the gauge moves with it.
    counted: Mutex<Option<Arc<Metrics>>>,
}

impl Instance {
    /// A new instance, Starting; [`Instance::supervise`] brings it up.
    pub fn new(spec: InstanceSpec) -> Arc<Instance> {
        let phase = Phase { state: InstanceState::Starting, error: String::new(), restarts: 0 };
        Arc::new(Instance {
            spec,
            phase: watch::Sender::new(phase),
            client: RwLock::new(None),
            logs: Arc::default(),
            stop: CancellationToken::new(),
            done: CancellationToken::new(),
            counted: Mutex::new(None),
        })
    }

    /// Counts it in `metrics`' instances gauge, in its state as it changes, until
    /// [`Instance::uncount`]. Counting it again moves it to the new `metrics`.
    pub fn count_in(&self, metrics: Arc<Metrics>) {
        let mut counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        let state = state_labels(self.phase.borrow().state);
        if let Some(old) = counted.take() {
            old.instances.get_or_create(&state).dec();
        }
        metrics.instances.get_or_create(&state).inc();
        *counted = Some(metrics);
    }

    /// No longer counts it (it has left its table).
    pub fn uncount(&self) {
        let mut counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = counted.take() {
            m.instances.get_or_create(&state_labels(self.phase.borrow().state)).dec();
        }
    }

    /// What it runs.
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    /// Its log.
    pub fn logs(&self) -> &Arc<LogBuffer> {
        &self.logs
    }

    /// Its status, as heartbeats and Deploy report it.
    pub fn status(&self) -> InstanceStatus {
        let phase = self.phase.borrow();
        InstanceStatus {
            instance_id: self.spec.instance_id.clone(),
            api_id: self.spec.api_id.clone(),
            version: self.spec.version,
            state: phase.state.into(),
            error: phase.error.clone(),
            restarts: phase.restarts,
        }
    }

    /// Waits, at most `patience`, until it is no longer Starting; then its status.
    pub async fn settled(&self, patience: Duration) -> InstanceStatus {
        let mut rx = self.phase.subscribe();
        let _ = tokio::time::timeout(patience, rx.wait_for(|p| p.state != InstanceState::Starting)).await;
        self.status()
    }

    /// Asks the supervisor to stop it and remove its sandbox.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until the supervisor has returned (after [`Instance::stop`]).
    pub async fn stopped(&self) {
        self.done.cancelled().await;
    }

    /// One call to the handler, waiting at most `timeout` (`None`: the instance's own).
    /// The error says whether the call certainly ran nothing.
    pub async fn invoke(&self, event: Vec<u8>, timeout: Option<Duration>) -> Result<InvokeResult, InvokeError> {
        let timeout = timeout.map_or(self.spec.timeout, |t| t.min(self.spec.timeout));
        let client = self.client.read().ok().and_then(|c| c.clone());
        let Some(client) = client else {
            let state = self.phase.borrow().state.name();
            return Err(InvokeError::not_run(unavailable(format!(
                "instance {} is not serving (it is {state})",
                self.spec.instance_id
            ))));
        };
        let started = Instant::now();
        match client.call(event, timeout).await {
            Ok(answer) => Ok(InvokeResult {
                kind: answer.kind.into(),
                body: answer.body,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
            Err(CallError::Busy) => Err(InvokeError::not_run(Error::Wire(WireError {
                retry_after: Some(1),
                ..WireError::new(
                    Kind::NoCapacity,
                    format!("instance {} has too many calls in flight", self.spec.instance_id),
                )
            }))),
            Err(CallError::Unavailable) => Err(InvokeError::not_run(unavailable(format!(
                "instance {} is not serving (its channel broke)",
                self.spec.instance_id
            )))),
            // The shim may have had the call when the channel broke: it may have run, so
            // the edge runs it again elsewhere only when its method allows.
            Err(CallError::Lost) => Err(InvokeError::maybe_run(unavailable(format!(
                "instance {} stopped serving during the call",
                self.spec.instance_id
            )))),
            Err(CallError::TooLarge { len, limit }) => Err(InvokeError::maybe_run(Error::Wire(WireError::new(
                Kind::ResponseTooLarge,
                format!("the handler's answer is {len} bytes, over the limit of {limit} bytes"),
            )))),
            Err(CallError::Timeout) => Err(InvokeError::maybe_run(Error::Wire(WireError::new(
                Kind::Timeout,
                format!("the handler did not answer within {} ms", timeout.as_millis()),
            )))),
        }
    }

    fn set_phase(&self, state: InstanceState, error: Option<&str>, restarts: Option<u32>) {
        let counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
        let mut before = state;
        self.phase.send_modify(|p| {
            before = p.state;
            p.state = state;
            if let Some(e) = error {
                p.error = cut(e, MAX_STATUS_ERROR);
            }
            if let Some(r) = restarts {
                p.restarts = r;
            }
        });
        if let Some(m) = counted.as_ref()
            && before != state
        {
            m.instances.get_or_create(&state_labels(before)).dec();
            m.instances.get_or_create(&state_labels(state)).inc();
        }
    }

    fn set_client(&self, client: Option<Arc<ServeClient>>) {
        if let Ok(mut slot) = self.client.write() {
            *slot = client;
        }
    }

    /// Keeps the instance serving until stopped. Returns once its sandbox is removed.
    pub async fn supervise(self: Arc<Self>, launcher: Arc<dyn Launcher>, limits: ServeLimits) {
        let _done = self.done.clone().drop_guard();
        let id = self.spec.instance_id.as_str();
        let mut backoff = BACKOFF_MIN;
        let mut restarts = 0;
        loop {
            let launched = tokio::select! {
                () = self.stop.cancelled() => return,
                l = launch(&*launcher, &self.spec, &self.logs, limits) => l,
            };
            let ended = match launched {
                Ok((client, mut sandbox)) => {
                    let client = Arc::new(client);
                    self.set_client(Some(client.clone()));
                    self.set_phase(InstanceState::Running, None, None);
                    self.logs.note("started");
                    info!(instance_id = id, restarts, "instance serving");
                    let since = Instant::now();
                    let broken = tokio::select! {
                        () = self.stop.cancelled() => None,
                        b = client.broken() => Some(b),
                    };
                    self.set_client(None);
                    client.close();
                    let Some(broken) = broken else {
                        sandbox.remove().await;
                        return;
                    };
                    let ended = sandbox.ended(&broken).await;
                    sandbox.remove().await;
                    if since.elapsed() >= HEALTHY_AFTER {
                        backoff = BACKOFF_MIN;
                    }
                    ended
                }
                Err(Failure::Rejected(message)) => {
                    self.set_phase(InstanceState::Failed, Some(&message), None);
                    self.logs.note(&format!("load failed: {message}"));
                    // The message may quote the handler's code: it goes to the instance's
                    // own log and status, never to the agent's log.
                    warn!(instance_id = id, "handler failed to load");
                    self.stop.cancelled().await;
                    return;
                }
                Err(Failure::Crashed(ended)) => ended,
            };
            let reason = ended.reason();
            self.set_phase(InstanceState::Crashed, Some(&reason), None);
            self.logs.note(&format!("crashed: {reason}"));
            self.logs.note(&format!("restarting in {} s", backoff.as_secs()));
            warn!(instance_id = id, cause = %ended.what, restarts, backoff_s = backoff.as_secs(), "instance crashed; restarting");
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            restarts += 1;
            self.set_phase(InstanceState::Starting, None, Some(restarts));
        }
    }
}

enum Failure {
    Rejected(String),
    Crashed(Ended),
}

/// Starts a sandbox and loads the handler into it. On failure the sandbox is removed.
async fn launch(
    launcher: &dyn Launcher,
    spec: &InstanceSpec,
    logs: &Arc<LogBuffer>,
    limits: ServeLimits,
) -> Result<(ServeClient, Box<dyn LaunchedSandbox>), Failure> {
    let Launched { stream, mut sandbox } = launcher.launch(spec, logs).await.map_err(Failure::Crashed)?;
    match serve_client::load(stream, spec.code.as_bytes(), limits).await {
        Ok(client) => Ok((client, sandbox)),
        Err(LoadError::Rejected(message)) => {
            sandbox.remove().await;
            Err(Failure::Rejected(message))
        }
        Err(LoadError::Broken(broken)) => {
            let ended = sandbox.ended(&broken).await;
            sandbox.remove().await;
            Err(Failure::Crashed(ended))
        }
    }
}

/// The instances gauge's label of `state`.
pub fn state_labels(state: InstanceState) -> StateLabels {
    StateLabels { state: state.name() }
}

fn unavailable(message: String) -> Error {
    Error::Wire(WireError::new(Kind::Unavailable, message))
}

/// `text` cut to at most `max` bytes, on a character boundary, marked when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(4);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_the_handlers_words_apart_and_are_bounded() {
        let e = Ended { what: "the process exited with code 1".into(), last_stderr: Some("KeyError: 'x'".into()) };
        assert_eq!(e.reason(), "the process exited with code 1; last stderr line: KeyError: 'x'");
        let long = cut(&"é".repeat(MAX_STATUS_ERROR), MAX_STATUS_ERROR);
        assert!(long.len() <= MAX_STATUS_ERROR && long.ends_with(" …"));
    }
}
