//! The usage flusher: every interval (or as soon as a full batch waits) it reads the
//! oldest events in position order, sends them to `Routes.ReportUsage` as one batch, and
//! only after the acknowledgement deletes what the control plane has committed. A
//! supervisor restarts it after a crash; it simply resumes from what is still stored.
use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::FutureExt;
use souq_proto::{
    Kind, WireError,
    routes::{UsageBatch, routes_client::RoutesClient},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, error, warn};

use super::{
    BATCH, MAX_STREAM_BACKLOG, Shared, Store,
    event::{Position, batch_id},
};

/// Longest one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before a crashed flusher is started again.
const RESTART_DELAY: Duration = Duration::from_millis(500);

/// TEST HOOK, for fault-injection tests only: makes the flusher die once at a chosen
/// point, as if the process had crashed there (nothing is deleted), after which the
/// supervisor restarts it. Inert unless armed.
#[derive(Debug, Default)]
pub struct FlushFaults {
    before_commit: AtomicBool,
    after_commit: AtomicBool,
}

impl FlushFaults {
    /// TEST HOOK: the next flush with events dies after reading them, before sending them.
    pub fn crash_before_commit_once(&self) {
        self.before_commit.store(true, Ordering::SeqCst);
    }

    /// TEST HOOK: the next flush with events dies after the control plane has committed
    /// them, before they are deleted here.
    pub fn crash_after_commit_once(&self) {
        self.after_commit.store(true, Ordering::SeqCst);
    }
}

/// Why a flush did not finish.
#[derive(Debug)]
enum FlushError {
    /// A test hook fired: the flusher dies here.
    Crash(&'static str),
    /// The store or the control plane failed; retried at the next tick.
    Failed(String),
}

/// What the flusher needs.
#[derive(Clone)]
pub struct Flusher {
    /// The meter's state.
    pub shared: Arc<Shared>,
    /// The control plane's `Routes`.
    pub routes: RoutesClient<Channel>,
    /// Presented as the bearer to `Routes`.
    pub join_token: String,
    /// How often to flush when fewer than a batch wait.
    pub interval: Duration,
    /// The test hook.
    pub faults: Arc<FlushFaults>,
}

impl Flusher {
    /// Runs the flusher, restarting it after a crash, until `stop`; then one last flush.
    pub async fn supervise(self, stop: CancellationToken) {
        loop {
            let run = AssertUnwindSafe(self.clone().run(stop.clone())).catch_unwind().await;
            match run {
                Ok(Ok(())) => return,
                Ok(Err(at)) => warn!(at, "usage flusher crashed (test hook); restarting it"),
                Err(_) => error!("usage flusher panicked; restarting it"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RESTART_DELAY) => {}
            }
        }
    }

    /// Flushes at every tick until `stop`, then once more. An error is a crash.
    async fn run(self, stop: CancellationToken) -> Result<(), &'static str> {
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(self.interval) => false,
                () = self.shared.flush_now().notified() => false,
            };
            // Keep going while full batches wait, so a backlog drains at once.
            loop {
                match self.flush_once().await {
                    Ok(n) => {
                        if failing {
                            debug!("usage reports go through again");
                        }
                        failing = false;
                        if n < BATCH {
                            break;
                        }
                    }
                    Err(FlushError::Crash(at)) => return Err(at),
                    Err(FlushError::Failed(e)) => {
                        if !failing {
                            warn!(error = %e, "could not report usage; keeping the events and retrying");
                        }
                        failing = true;
                        break;
                    }
                }
            }
            self.check_backlog().await;
            if stopping {
                return Ok(());
            }
        }
    }

    /// One batch: read, report, delete what is committed. Returns how many were read.
    async fn flush_once(&self) -> Result<usize, FlushError> {
        let events = match &self.shared.store {
            Store::Memory(q) => q.read(BATCH),
            Store::Redis(s) => {
                let (events, corrupt) = s.read(BATCH).await.map_err(|e| FlushError::Failed(e.to_string()))?;
                if !corrupt.is_empty() {
                    error!(entries = ?corrupt, "usage stream entries that do not decode; deleting them");
                    s.delete(&corrupt).await.map_err(|e| FlushError::Failed(e.to_string()))?;
                }
                events
            }
        };
        let Some(last) = events.last().and_then(|e| e.position.parse::<Position>().ok()) else { return Ok(0) };
        let n = events.len();
        if self.faults.before_commit.swap(false, Ordering::SeqCst) {
            return Err(FlushError::Crash("before commit"));
        }
        let events_positions: Vec<String> = events.iter().map(|e| e.position.clone()).collect();
        let batch =
            UsageBatch { source: self.shared.source.clone(), batch_id: batch_id(&self.shared.source, last), events };
        let req = super::super::routes::grpc(batch, Some(&self.join_token), REPORT_TIMEOUT);
        let ack = match self.routes.clone().report_usage(req).await {
            Ok(ack) => ack.into_inner(),
            Err(status) => {
                self.drop_refused_event(&status, &events_positions).await;
                return Err(FlushError::Failed(format!("{:?}: {}", status.code(), status.message())));
            }
        };
        if self.faults.after_commit.swap(false, Ordering::SeqCst) {
            return Err(FlushError::Crash("after commit"));
        }
        debug!(events = n, new = ack.committed, through = %ack.committed_through, "usage reported");
        if ack.committed_through.is_empty() {
            return Ok(n);
        }
        let through: Position = ack.committed_through.parse().map_err(|_| {
            FlushError::Failed(format!(
                "the control plane acknowledged a position that is none: {:?}",
                ack.committed_through
            ))
        })?;
        match &self.shared.store {
            Store::Memory(q) => {
                q.delete_through(through);
            }
            Store::Redis(s) => {
                s.delete_through(through).await.map_err(|e| FlushError::Failed(e.to_string()))?;
            }
        }
        Ok(n)
    }

    /// When the control plane refuses a batch for one event's field (`events[i].…`), that
    /// event can never be committed: it is deleted (and logged) so that it does not hold
    /// back every later event. Any other refusal is retried as it is.
    async fn drop_refused_event(&self, status: &tonic::Status, positions: &[String]) {
        let wire = WireError::from(status);
        let Some(field) = wire.field.as_deref().filter(|_| wire.kind == Kind::Validation) else { return };
        let Some(position) = refused_event(field).and_then(|i| positions.get(i)) else { return };
        error!(%position, field, detail = %wire.message, "the control plane refuses a usage event; deleting it");
        match &self.shared.store {
            Store::Memory(q) => {
                if let Ok(p) = position.parse() {
                    q.delete(p);
                }
            }
            Store::Redis(s) => {
                if let Err(e) = s.delete(std::slice::from_ref(position)).await {
                    warn!(error = %e, "could not delete the refused usage event");
                }
            }
        }
    }

    /// Refuses new calls while the Redis stream is too long, and admits them again after.
    async fn check_backlog(&self) {
        if let Store::Redis(s) = &self.shared.store
            && let Ok(len) = s.len().await
        {
            let over = len > MAX_STREAM_BACKLOG;
            if over {
                error!(
                    entries = len,
                    "the usage stream is over its limit; calls are refused until the control plane takes usage again"
                );
            }
            self.shared.set_backlogged(over);
        }
    }
}

/// The index `i` of a field `events[i].…` that the control plane refused.
fn refused_event(field: &str) -> Option<usize> {
    field.strip_prefix("events[")?.split_once(']')?.0.parse().ok()
}

#[cfg(test)]
#[path = "flush_tests.rs"]
mod tests;
