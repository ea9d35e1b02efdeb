//! Warm pools: per runtime, a few started sandboxes wait for code, so an execute costs
//! about what the code costs. The first execute of a user takes one (or, if none is
//! waiting, starts one: a cold start, never a refusal) and keeps it for that user's later
//! executes, each in a fresh process; it is destroyed after an abnormal run, after
//! `max_uses` runs or when idle. A sandbox never serves two users.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bollard::Docker;
use souq_proto::{Runtime, agent::ExecuteResult};
use tokio::sync::{Mutex as AsyncMutex, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Node,
    error::{Error, Result},
    session::Session,
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

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            size: 1,
            max_uses: 1000,
            idle_ttl: Duration::from_secs(120),
            max_sessions: 64,
            refill_pause: Duration::from_millis(100),
        }
    }
}

type Slot = Arc<AsyncMutex<Option<Session>>>;

/// The warm sandboxes of one node.
#[derive(Default)]
pub struct Pools {
    idle: Mutex<HashMap<Runtime, Vec<Session>>>,
    assigned: Mutex<HashMap<(String, Runtime), Slot>>,
    wake: Notify,
}

impl Pools {
    /// Idle sandboxes per runtime, for the heartbeat.
    pub fn levels(&self) -> HashMap<Runtime, usize> {
        self.idle.lock().map(|m| m.iter().map(|(r, v)| (*r, v.len())).collect()).unwrap_or_default()
    }

    fn take_idle(&self, runtime: Runtime) -> Option<Session> {
        let s = self.idle.lock().ok()?.get_mut(&runtime)?.pop();
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
}

/// Runs `code` for `user` in that user's warm sandbox, making one if needed.
pub(crate) async fn execute(
    node: &Node,
    docker: &Docker,
    user: &str,
    runtime: Runtime,
    code: &str,
    stdin: &[u8],
    timeout: Duration,
) -> Result<ExecuteResult> {
    let pools = &node.pools;
    let slot = pools.slot(user, runtime)?;
    // One run at a time per user and runtime: the sandbox's limits are that user's share.
    let mut held = slot.lock().await;
    if held.is_none() {
        let over = pools.assigned.lock().map(|a| a.len()).unwrap_or(0).saturating_sub(node.pool.max_sessions);
        for (_, key) in pools.idle_assigned().into_iter().take(over) {
            pools.destroy_slot(&key).await;
        }
        let session = match pools.take_idle(runtime) {
            Some(s) => s,
            None => {
                let image = node.images.get(&runtime).ok_or_else(|| Error::Internal(format!("no image for {runtime}")))?;
                Session::start(docker, &node.name, image, runtime, &node.limits, &node.channel_dir).await?
            }
        };
        *held = Some(session);
    }
    let Some(session) = held.as_mut() else { return Err(Error::Internal("no sandbox".into())) };
    let outcome = session.run(code, stdin, timeout, node.limits.output_bytes).await;
    let retire = !outcome.reusable || session.uses >= node.pool.max_uses;
    if retire && let Some(s) = held.take() {
        s.destroy().await;
    }
    Ok(outcome.result)
}

/// Keeps `size` idle sandboxes per runtime, one start at a time, and destroys users'
/// sandboxes that have been idle too long; until `shutdown`, then destroys them all.
pub(crate) async fn maintain(node: Arc<Node>, shutdown: CancellationToken) {
    let cfg = node.pool.clone();
    loop {
        if let Ok(docker) = node.docker() {
            refill(&node, &docker, &cfg, &shutdown).await;
        }
        let now = tokio::time::Instant::now();
        for (last, key) in node.pools.idle_assigned() {
            if now.duration_since(last) >= cfg.idle_ttl {
                node.pools.destroy_slot(&key).await;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = node.pools.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    let idle: Vec<Session> = node.pools.idle.lock().map(|mut m| m.drain().flat_map(|(_, v)| v).collect()).unwrap_or_default();
    for s in idle {
        s.destroy().await;
    }
}

async fn refill(node: &Node, docker: &Docker, cfg: &PoolConfig, shutdown: &CancellationToken) {
    let mut started = 0;
    for (runtime, image) in &node.images {
        loop {
            let have = node.pools.idle.lock().map(|m| m.get(runtime).map_or(0, Vec::len)).unwrap_or(cfg.size);
            if have >= cfg.size || shutdown.is_cancelled() {
                break;
            }
            match Session::start(docker, &node.name, image, *runtime, &node.limits, &node.channel_dir).await {
                Ok(s) => {
                    if let Ok(mut m) = node.pools.idle.lock() {
                        m.entry(*runtime).or_default().push(s);
                    }
                    started += 1;
                }
                Err(e) => {
                    warn!(%runtime, error = %e, "could not start a warm sandbox");
                    return;
                }
            }
            tokio::time::sleep(cfg.refill_pause).await;
        }
    }
    if started > 0 {
        info!(started, levels = ?node.pools.levels(), "warm pools refilled");
    }
}
