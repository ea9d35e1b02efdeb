//! The instances this node holds, by instance id: Deploy (idempotent by id), Stop, the
//! data path's Invoke, and every instance's status for the heartbeats. The map is locked
//! only to look up or change an entry, never across an await. The instances it holds are
//! counted by state in the agent's `souq_agent_instances` gauge.
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use souq_proto::{
    Kind, WireError,
    agent::{InstanceStatus, InvokeResult},
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    gate::{Gate, InvokeError},
    lifecycle::{Instance, Launcher},
    serve_client::ServeLimits,
    spec::InstanceSpec,
};
use crate::{
    error::{Error, Result},
    metrics::Metrics,
};

/// How long the handler may take to load (Go compiles then).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Most calls in flight per instance.
pub const MAX_IN_FLIGHT: usize = 1024;
/// How long Deploy waits for the outcome: the shim's connection and the load, with slack.
const DEPLOY_PATIENCE: Duration = Duration::from_secs(180);
/// How long Stop waits for the sandbox's removal.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// Every instance of this node.
pub struct Instances {
    map: RwLock<HashMap<String, Arc<Instance>>>,
    launcher: Arc<dyn Launcher>,
    limits: ServeLimits,
    max_instances: usize,
    closed: CancellationToken,
    /// Invoke's door: calls in flight, and the drain.
    gate: Gate,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instances").field("max_instances", &self.max_instances).finish_non_exhaustive()
    }
}

fn poisoned() -> Error {
    Error::Internal("instances lock poisoned".into())
}

impl Instances {
    /// No instances yet; each will be started by `launcher`, with answers of at most
    /// `output_limit` bytes, and at most `max_instances` of them at once.
    pub fn new(launcher: Arc<dyn Launcher>, output_limit: usize, max_instances: usize) -> Self {
        Instances::with_metrics(launcher, output_limit, max_instances, Arc::default())
    }

    /// [`Instances::new`], counted by state in `metrics` (every state at 0 at first).
    pub fn with_metrics(
        launcher: Arc<dyn Launcher>,
        output_limit: usize,
        max_instances: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        use souq_proto::agent::InstanceState as S;
        for state in [S::Starting, S::Running, S::Crashed, S::Failed] {
            metrics.instances.get_or_create(&super::lifecycle::state_labels(state)).set(0);
        }
        Instances {
            map: RwLock::default(),
            launcher,
            limits: ServeLimits { output_limit, load_timeout: LOAD_TIMEOUT, max_in_flight: MAX_IN_FLIGHT },
            max_instances: max_instances.max(1),
            closed: CancellationToken::new(),
            gate: Gate::default(),
            metrics,
        }
    }

    /// The instance `id`, if this node holds it.
    pub fn get(&self, id: &str) -> Option<Arc<Instance>> {
        self.map.read().ok()?.get(id).cloned()
    }

    /// Starts the instance unless it is known already, then waits until it is Running or
    /// Failed (or Crashed: it is then restarted in the background) and returns its status.
    pub async fn deploy(&self, spec: InstanceSpec) -> Result<InstanceStatus> {
        if self.closed.is_cancelled() {
            return Err(Error::Wire(WireError::new(Kind::Unavailable, "the node is shutting down")));
        }
        let (instance, new) = {
            let mut map = self.map.write().map_err(|_| poisoned())?;
            match map.get(&spec.instance_id) {
                Some(known) => {
                    let k = known.spec();
                    if (k.api_id.as_str(), k.version, k.runtime) != (spec.api_id.as_str(), spec.version, spec.runtime)
                        || k.code != spec.code
                    {
                        return Err(Error::Wire(WireError::new(
                            Kind::Conflict,
                            format!("instance {} already serves API {} version {}", k.instance_id, k.api_id, k.version),
                        )));
                    }
                    (known.clone(), false)
                }
                None if map.len() >= self.max_instances => {
                    return Err(Error::Wire(WireError::new(
                        Kind::NoCapacity,
                        format!("this node holds {} instances, its most", map.len()),
                    )));
                }
                None => {
                    let instance = Instance::new(spec);
                    instance.count_in(self.metrics.clone());
                    map.insert(instance.spec().instance_id.clone(), instance.clone());
                    (instance, true)
                }
            }
        };
        if new {
            let s = instance.spec();
            info!(instance_id = %s.instance_id, api_id = %s.api_id, version = s.version, runtime = %s.runtime, "deploying instance");
            tokio::spawn(instance.clone().supervise(self.launcher.clone(), self.limits));
        }
        tokio::select! {
            status = instance.settled(DEPLOY_PATIENCE) => Ok(status),
            () = self.closed.cancelled() => Err(Error::Wire(WireError::new(Kind::Unavailable, "the node is shutting down"))),
        }
    }

    /// Stops the instance, removes its sandbox and forgets it; an unknown id is not an error.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let removed = self.map.write().map_err(|_| poisoned())?.remove(id);
        if let Some(instance) = removed {
            instance.uncount();
            instance.stop();
            let _ = tokio::time::timeout(STOP_PATIENCE, instance.stopped()).await;
            info!(instance_id = id, "instance stopped");
        }
        Ok(())
    }

    /// One call to the instance `id`, waiting at most `timeout` (`None`: the instance's own).
    pub async fn invoke(&self, id: &str, event: Vec<u8>, timeout: Option<Duration>) -> Result<InvokeResult> {
        self.call(id, event, timeout).await.map_err(|e| e.error)
    }

    /// [`Instances::invoke`], with an error that says whether the call certainly ran
    /// nothing: the data path's Invoke. Refused once the drain has begun.
    pub async fn call(&self, id: &str, event: Vec<u8>, timeout: Option<Duration>) -> Result<InvokeResult, InvokeError> {
        let _pass = self.gate.enter()?;
        let instance = self.get(id).ok_or_else(|| {
            InvokeError::not_run(Error::Wire(WireError::new(Kind::NotFound, format!("this node has no instance {id}"))))
        })?;
        instance.invoke(event, timeout).await
    }

    /// Refuses new calls (as having run nothing) and waits, at most `patience`, for the
    /// calls in flight to end; returns how many still ran then. The instances keep serving
    /// them meanwhile.
    pub async fn drain(&self, patience: Duration) -> usize {
        self.gate.drain(patience).await
    }

    /// Every instance's status.
    pub fn statuses(&self) -> Vec<InstanceStatus> {
        let all: Vec<Arc<Instance>> = self.map.read().map(|m| m.values().cloned().collect()).unwrap_or_default();
        all.iter().map(|i| i.status()).collect()
    }

    /// Refuses new deploys, stops every instance and waits (boundedly) for their removal.
    pub async fn stop_all(&self) {
        self.closed.cancel();
        let all: Vec<Arc<Instance>> = match self.map.write() {
            Ok(mut m) => m.drain().map(|(_, i)| i).collect(),
            Err(_) => return,
        };
        for instance in &all {
            instance.uncount();
            instance.stop();
        }
        let deadline = tokio::time::Instant::now() + STOP_PATIENCE;
        for instance in &all {
            let _ = tokio::time::timeout_at(deadline, instance.stopped()).await;
        }
        if !all.is_empty() {
            info!(stopped = all.len(), "instances stopped");
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
