//! Warm pools: per runtime, a few started sandboxes wait for code, so an execute costs
//! about what the code costs. The first execute of a user takes one (or, if none is
//! waiting, starts one: a cold start, never a refusal) and keeps it for that user's later
//! executes, each in a fresh process; it is destroyed after an abnormal run, after
//! `max_uses` runs or when idle. A sandbox never serves two users. The idle level of each
//! runtime is kept in the agent's `souq_agent_warm_sandboxes` gauge as it changes.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bollard::Docker;
use souq_proto::{Runtime, agent::ExecuteResult};
use tokio::sync::{Mutex as AsyncMutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{admission::Ticket, profile::Limits, session::Session};
use crate::{
    docker::{Engine, Images},
    error::{Error, Result},
    metrics::{Metrics, RuntimeLabels},
};

/// How warm sandboxes are kept; the operator's to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Idle sandboxes kept per runtime.
    pub size: usize,
    /// Runs one user's sandbox serves before it is replaced.
    pub max_uses: u32,
    /// A user's sandbox unused this long is destroyed.
    pub idle_ttl: Duration,
    /// Most sandboxes assigned to users at once; past it the least recently used idle
    /// one is destroyed.
    pub max_sessions: usize,
    /// Pause between two sandbox starts of the refill, so the Engine is not swamped.
    pub refill_pause: Duration,
}

impl PoolConfig {
    /// The defaults: the one definition the operator's options start from.
    pub const DEFAULT: PoolConfig = PoolConfig {
        size: 1,
        max_uses: 1000,
        idle_ttl: Duration::from_secs(120),
        max_sessions: 64,
        refill_pause: Duration::from_millis(100),
    };
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig::DEFAULT
    }
}

/// What every warm sandbox of a node is started from.
#[derive(Debug, Clone)]
pub struct SessionTemplate {
    /// The node's name, for the labels.
    pub node: String,
    /// The image of each runtime.
    pub images: Images,
    /// The operator's limits.
    pub limits: Limits,
    /// The root of the channel directories.
    pub channels: PathBuf,
}

impl SessionTemplate {
    async fn start(&self, docker: &Docker, runtime: Runtime) -> Result<Session> {
        let image = self.images.get(&runtime).ok_or_else(|| Error::Internal(format!("no image for {runtime}")))?;
        Session::start(docker, &self.node, image, runtime, &self.limits, &self.channels).await
    }
}

type Slot = Arc<AsyncMutex<Option<Session>>>;

/// One execute's program, input and wall timeout.
#[derive(Debug, Clone, Copy)]
pub struct Job<'a> {
    /// The program.
    pub code: &'a str,
    /// Its stdin.
    pub stdin: &'a [u8],
    /// Its wall timeout.
    pub timeout: Duration,
}

/// The warm sandboxes of one node.
pub struct Pools {
    cfg: PoolConfig,
    template: SessionTemplate,
    idle: Mutex<HashMap<Runtime, Vec<Session>>>,
    assigned: Mutex<HashMap<(String, Runtime), Slot>>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("cfg", &self.cfg).field("levels", &self.levels()).finish_non_exhaustive()
    }
}

impl Pools {
    /// Empty pools, kept as `cfg` says with sandboxes made from `template`; see
    /// [`Pools::maintain`].
    pub fn new(cfg: PoolConfig, template: SessionTemplate) -> Self {
        Pools::with_metrics(cfg, template, Arc::default())
    }

    /// [`Pools::new`], with the idle levels kept in `metrics` (0 for each runtime at first).
    pub fn with_metrics(cfg: PoolConfig, template: SessionTemplate, metrics: Arc<Metrics>) -> Self {
        for runtime in template.images.keys() {
            metrics.warm_sandboxes.get_or_create(&RuntimeLabels { runtime: runtime.as_str() }).set(0);
        }
        Pools { cfg, template, idle: Mutex::default(), assigned: Mutex::default(), wake: Notify::new(), metrics }
    }

    /// Sets the warm gauge of `runtime` to `level`; called with the idle lock held, so the
    /// last level set is the pool's.
    fn publish(&self, runtime: Runtime, level: usize) {
        let level = i64::try_from(level).unwrap_or(i64::MAX);
        self.metrics.warm_sandboxes.get_or_create(&RuntimeLabels { runtime: runtime.as_str() }).set(level);
    }

    /// Idle sandboxes per runtime, for the heartbeat.
    pub fn levels(&self) -> HashMap<Runtime, usize> {
        self.idle.lock().map(|m| m.iter().map(|(r, v)| (*r, v.len())).collect()).unwrap_or_default()
    }

    fn take_idle(&self, runtime: Runtime) -> Option<Session> {
        let s = {
            let mut idle = self.idle.lock().ok()?;
            let pool = idle.get_mut(&runtime)?;
            let s = pool.pop();
            self.publish(runtime, pool.len());
            s
        };
        self.wake.notify_one();
        s
    }

    fn slot(&self, user: &str, runtime: Runtime) -> Result<Slot> {
        let mut assigned = self.assigned.lock().map_err(|_| Error::Internal("pool lock poisoned".into()))?;
        Ok(assigned.entry((user.to_owned(), runtime)).or_default().clone())
    }

    /// Sandboxes held for users that are not running now, oldest first.
    fn idle_assigned(&self) -> Vec<(tokio::time::Instant, (String, Runtime))> {
        let Ok(assigned) = self.assigned.lock() else { return Vec::new() };
        let mut v: Vec<_> = assigned
            .iter()
            .filter_map(|(k, slot)| slot.try_lock().ok().and_then(|s| s.as_ref().map(|s| (s.last_used, k.clone()))))
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v
    }

    async fn destroy_slot(&self, key: &(String, Runtime)) {
        // Only a slot no run holds is taken out; a running one is left to its run.
        let session = {
            let Ok(mut assigned) = self.assigned.lock() else { return };
            let taken = assigned.get(key).and_then(|slot| slot.try_lock().ok().map(|mut s| s.take()));
            if taken.is_some() {
                assigned.remove(key);
            }
            taken.flatten()
        };
        if let Some(s) = session {
            s.destroy().await;
        }
    }

    /// Runs `job` for `user` in that user's warm sandbox, making one if needed. The run
    /// takes its running slot from `ticket` only once it holds the user's sandbox, so a
    /// run waiting behind the same user's earlier one holds no slot meanwhile.
    pub async fn execute(
        &self,
        docker: &Docker,
        user: &str,
        runtime: Runtime,
        job: Job<'_>,
        ticket: &Ticket<'_>,
    ) -> Result<ExecuteResult> {
        let Job { code, stdin, timeout } = job;
        let key = (user.to_owned(), runtime);
        // One run at a time per user and runtime: the sandbox's limits are that user's share.
        let (slot, mut held) = loop {
            let slot = self.slot(user, runtime)?;
            let held = Arc::clone(&slot).lock_owned().await;
            // A slot released while this run waited for it is no longer in `assigned`:
            // a sandbox put in it would count against nothing and never be destroyed.
            if self.is_current(&key, &slot) {
                break (slot, held);
            }
        };
        let Some(_running) = ticket.slot().await else {
            // An empty entry would count against `max_sessions` for ever.
            if held.is_none() {
                self.release(&key, &slot);
            }
            return Err(Error::Internal("shutting down".into()));
        };
        if held.is_none() {
            let over = self.assigned.lock().map(|a| a.len()).unwrap_or(0).saturating_sub(self.cfg.max_sessions);
            for (_, key) in self.idle_assigned().into_iter().take(over) {
                self.destroy_slot(&key).await;
            }
            let session = match self.take_idle(runtime) {
                Some(s) => s,
                None => match self.template.start(docker, runtime).await {
                    Ok(s) => s,
                    Err(e) => {
                        self.release(&key, &slot);
                        return Err(e);
                    }
                },
            };
            *held = Some(session);
        }
        let Some(session) = held.as_mut() else { return Err(Error::Internal("no sandbox".into())) };
        let outcome = session.run(code, stdin, timeout, self.template.limits.output_bytes).await;
        let retire = !outcome.reusable || session.uses >= self.cfg.max_uses;
        if retire && let Some(s) = held.take() {
            // The entry goes with its sandbox, before the slot is unlocked; kept, it would
            // count against `max_sessions` for ever.
            self.release(&key, &slot);
            drop(held);
            s.destroy().await;
        }
        Ok(outcome.result)
    }

    /// Whether `slot` is still the one `assigned` holds for `key`.
    fn is_current(&self, key: &(String, Runtime), slot: &Slot) -> bool {
        self.assigned.lock().is_ok_and(|a| a.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)))
    }

    /// Removes `key`'s entry if it is still `slot`; called, with the slot locked, when
    /// its sandbox is gone.
    fn release(&self, key: &(String, Runtime), slot: &Slot) {
        if let Ok(mut assigned) = self.assigned.lock()
            && assigned.get(key).is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            assigned.remove(key);
        }
    }

    /// Keeps `size` idle sandboxes per runtime, one start at a time, and destroys users'
    /// sandboxes that have been idle too long; until `shutdown`, then destroys the idle
    /// ones. (Those still assigned go with the agent's final sweep of its containers.)
    pub async fn maintain(&self, engine: &Engine, shutdown: CancellationToken) {
        loop {
            if let Ok(docker) = engine.get() {
                self.refill(&docker, &shutdown).await;
            }
            let now = tokio::time::Instant::now();
            for (last, key) in self.idle_assigned() {
                if now.duration_since(last) >= self.cfg.idle_ttl {
                    self.destroy_slot(&key).await;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        let idle: Vec<Session> = self
            .idle
            .lock()
            .map(|mut m| {
                m.drain()
                    .flat_map(|(runtime, v)| {
                        self.publish(runtime, 0);
                        v
                    })
                    .collect()
            })
            .unwrap_or_default();
        for s in idle {
            s.destroy().await;
        }
    }

    async fn refill(&self, docker: &Docker, shutdown: &CancellationToken) {
        let mut started = 0;
        for runtime in self.template.images.keys().copied() {
            loop {
                let have = self.idle.lock().map(|m| m.get(&runtime).map_or(0, Vec::len)).unwrap_or(self.cfg.size);
                if have >= self.cfg.size || shutdown.is_cancelled() {
                    break;
                }
                match self.template.start(docker, runtime).await {
                    Ok(s) => {
                        if let Ok(mut m) = self.idle.lock() {
                            let pool = m.entry(runtime).or_default();
                            pool.push(s);
                            self.publish(runtime, pool.len());
                        }
                        started += 1;
                    }
                    Err(e) => {
                        warn!(%runtime, error = %e, "could not start a warm sandbox");
                        return;
                    }
                }
                tokio::time::sleep(self.cfg.refill_pause).await;
            }
        }
        if started > 0 {
            info!(started, levels = ?self.levels(), "warm pools refilled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools() -> Pools {
        let template = SessionTemplate {
            node: "n".into(),
            images: crate::docker::Images::new(),
            limits: Limits::default(),
            channels: PathBuf::from("/nonexistent"),
        };
        Pools::new(PoolConfig { max_sessions: 2, ..PoolConfig::DEFAULT }, template)
    }

    #[test]
    fn the_warm_gauge_starts_at_zero_for_every_runtime() {
        let m = Arc::new(Metrics::default());
        let template = SessionTemplate {
            images: [(Runtime::Python, "img".to_owned())].into(),
            ..pools().template
        };
        let p = Pools::with_metrics(PoolConfig::DEFAULT, template, m.clone());
        assert_eq!(m.warm_sandboxes.get_or_create(&RuntimeLabels { runtime: "python" }).get(), 0);
        p.publish(Runtime::Python, 3);
        assert_eq!(m.warm_sandboxes.get_or_create(&RuntimeLabels { runtime: "python" }).get(), 3);
        assert!(p.take_idle(Runtime::Python).is_none());
    }

    fn assigned(p: &Pools) -> usize {
        p.assigned.lock().unwrap().len()
    }

    #[tokio::test]
    async fn a_released_slot_no_longer_counts_against_max_sessions() {
        let p = pools();
        let key = ("u".to_owned(), Runtime::Python);
        let slot = p.slot("u", Runtime::Python).unwrap();
        let other = p.slot("v", Runtime::Python).unwrap();
        assert_eq!(assigned(&p), 2);
        // A run waits for the slot while its sandbox is retired.
        let waiting = p.slot("u", Runtime::Python).unwrap();
        {
            let _held = slot.clone().lock_owned().await;
            assert!(p.is_current(&key, &slot));
            p.release(&key, &slot);
        }
        assert_eq!(assigned(&p), 1, "the retired user's entry is gone");
        assert!(!p.is_current(&key, &waiting), "the waiting run must take a fresh slot");
        let fresh = p.slot("u", Runtime::Python).unwrap();
        assert!(!Arc::ptr_eq(&fresh, &slot) && p.is_current(&key, &fresh));
        // Releasing a stale slot leaves the fresh entry alone.
        p.release(&key, &slot);
        assert!(p.is_current(&key, &fresh));
        assert!(p.is_current(&("v".to_owned(), Runtime::Python), &other));
        assert_eq!(assigned(&p), 2);
    }

    #[tokio::test]
    async fn a_failed_start_leaves_no_entry() {
        let p = pools();
        // No image for the runtime: the start fails before any Docker call.
        let docker = Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION).unwrap();
        for i in 0..5 {
            let user = format!("u{i}");
            let job = Job { code: "", stdin: b"", timeout: Duration::from_secs(1) };
            let admission = crate::sandbox::admission::Admission::new(1, 0);
            let ticket = admission.enter().unwrap();
            assert!(p.execute(&docker, &user, Runtime::Python, job, &ticket).await.is_err());
        }
        assert_eq!(assigned(&p), 0, "failed starts count against no one");
    }
}
