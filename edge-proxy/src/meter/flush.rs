//! The usage flusher: every interval (or as soon as a full batch waits) it reads the
//! oldest events in position order, sends them to `Metering.ReportUsage` as one batch, and
//! only after the acknowledgement deletes what the control plane has committed. A
//! supervisor restarts it after a crash; it simply resumes from what is still stored.
#[cfg(any(test, feature = "fault-injection"))]
use std::sync::atomic::{AtomicBool, Ordering};
use std::{collections::BTreeSet, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::FutureExt;
use souq_proto::{
    Kind, WireError,
    metering::{UsageBatch, metering_client::MeteringClient},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, error, warn};

use crate::metrics::Metrics;

use super::{
    BATCH, MAX_STREAM_BACKLOG, Shared, Store,
    event::{Position, batch_id},
};

/// Longest one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait before a crashed flusher is started again.
const RESTART_DELAY: Duration = Duration::from_millis(500);

/// Where a test hook may make the flusher die.
#[derive(Debug, Clone, Copy)]
enum CrashPoint {
    /// After reading a batch, before sending it.
    BeforeCommit,
    /// After the control plane committed a batch, before it is deleted here.
    AfterCommit,
}

/// TEST HOOK, for fault-injection tests only: makes the flusher die once at a chosen
/// point, as if the process had crashed there (nothing is deleted), after which the
/// supervisor restarts it. Inert unless armed. Compiled only into tests and builds with
/// the `fault-injection` feature, never into a release binary.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Default)]
pub struct FlushFaults {
    before_commit: AtomicBool,
    after_commit: AtomicBool,
}

#[cfg(any(test, feature = "fault-injection"))]
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

    /// TEST HOOK: whether a crash is armed and has not fired yet.
    pub fn armed(&self) -> bool {
        self.before_commit.load(Ordering::SeqCst) || self.after_commit.load(Ordering::SeqCst)
    }

    /// Whether the crash at `point` is armed; disarms it.
    fn fire(&self, point: CrashPoint) -> bool {
        match point {
            CrashPoint::BeforeCommit => self.before_commit.swap(false, Ordering::SeqCst),
            CrashPoint::AfterCommit => self.after_commit.swap(false, Ordering::SeqCst),
        }
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
    shared: Arc<Shared>,
    /// The control plane's `Metering`.
    metering: MeteringClient<Channel>,
    /// Presented as the bearer to `Metering`.
    join_token: String,
    /// How often to flush when fewer than a batch wait.
    interval: Duration,
    /// Counts failed reports and shows the stream's length.
    metrics: Arc<Metrics>,
    /// The test hook.
    #[cfg(any(test, feature = "fault-injection"))]
    faults: Arc<FlushFaults>,
}

impl Flusher {
    /// A flusher of `shared`'s events to `metering`, every `interval` (sooner when a full
    /// batch waits), presenting `join_token`.
    pub fn new(shared: Arc<Shared>, metering: MeteringClient<Channel>, join_token: String, interval: Duration) -> Self {
        Flusher {
            shared,
            metering,
            join_token,
            interval,
            metrics: Arc::default(),
            #[cfg(any(test, feature = "fault-injection"))]
            faults: Arc::default(),
        }
    }

    /// Records failed reports and the stream's length in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// TEST HOOK: the flusher dies where `faults` is armed.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn with_faults(mut self, faults: Arc<FlushFaults>) -> Self {
        self.faults = faults;
        self
    }

    /// Whether a test hook makes the flusher die at `point` now.
    #[cfg(any(test, feature = "fault-injection"))]
    fn crashes_at(&self, point: CrashPoint) -> bool {
        self.faults.fire(point)
    }

    /// Whether a test hook makes the flusher die at `point` now: never, in this build.
    #[cfg(not(any(test, feature = "fault-injection")))]
    fn crashes_at(&self, _point: CrashPoint) -> bool {
        false
    }

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
        let mut refused = BTreeSet::new();
        loop {
            let stopping = tokio::select! {
                () = stop.cancelled() => true,
                () = tokio::time::sleep(self.interval) => false,
                () = self.shared.flush_now().notified() => false,
            };
            // Keep going while more waits, so a backlog drains at once.
            loop {
                match self.flush_once(&mut refused).await {
                    Ok(more) => {
                        if failing {
                            debug!("usage reports go through again");
                        }
                        failing = false;
                        if !more {
                            break;
                        }
                    }
                    Err(FlushError::Crash(at)) => return Err(at),
                    Err(FlushError::Failed(e)) => {
                        self.metrics.metering_flush_errors.inc();
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

    /// One batch: read, report, delete what is committed. Events the control plane has
    /// refused for good (`refused`) are left out. Returns whether more may wait.
    async fn flush_once(&self, refused: &mut BTreeSet<Position>) -> Result<bool, FlushError> {
        let failed = |e: ::redis::RedisError| FlushError::Failed(e.to_string());
        let (mut events, more) = match &self.shared.store {
            Store::Memory(q) => {
                let events = q.read(BATCH);
                let more = events.len() >= BATCH;
                (events, more)
            }
            Store::Redis(s, _) => {
                let read = s.read(BATCH).await.map_err(failed)?;
                if !read.corrupt.is_empty() {
                    error!(entries = ?read.corrupt, "usage stream entries that do not decode; deleting them");
                    s.delete(&read.corrupt).await.map_err(failed)?;
                }
                (read.events, read.more || !read.corrupt.is_empty())
            }
        };
        events.retain(|e| e.position.parse().is_ok_and(|p: Position| !refused.contains(&p)));
        let Some(last) = events.last().and_then(|e| e.position.parse::<Position>().ok()) else {
            return Ok(more);
        };
        if self.crashes_at(CrashPoint::BeforeCommit) {
            return Err(FlushError::Crash("before commit"));
        }
        let positions: Vec<String> = events.iter().map(|e| e.position.clone()).collect();
        let n = events.len();
        let batch =
            UsageBatch { source: self.shared.source.clone(), batch_id: batch_id(&self.shared.source, last), events };
        let mut req = tonic::Request::new(batch);
        req.set_timeout(REPORT_TIMEOUT);
        souq_proto::set_bearer(&mut req, &self.join_token);
        let ack = match self.metering.clone().report_usage(req).await {
            Ok(ack) => ack.into_inner(),
            Err(status) => {
                if let Some(p) = refused_for_good(&status, &positions) {
                    refused.insert(p);
                    return Ok(true);
                }
                return Err(FlushError::Failed(format!("{:?}: {}", status.code(), status.message())));
            }
        };
        if self.crashes_at(CrashPoint::AfterCommit) {
            return Err(FlushError::Crash("after commit"));
        }
        debug!(events = n, new = ack.committed, through = %ack.committed_through, "usage reported");
        if ack.committed_through.is_empty() {
            return Ok(more);
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
            Store::Redis(s, _) => {
                s.delete_through(through).await.map_err(failed)?;
            }
        }
        // Refused events at or before the commit left with the trim.
        refused.retain(|p| *p > through);
        Ok(more)
    }

    /// Refuses new calls while the Redis stream is too long, and admits them again after.
    async fn check_backlog(&self) {
        if let Store::Redis(s, _) = &self.shared.store
            && let Ok(len) = s.len().await
        {
            self.metrics.metering_stream_entries.set(i64::try_from(len).unwrap_or(i64::MAX));
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

/// The position of the event the control plane refused for good, when it refused a
/// batch for one event's field (`events[i].…`): that event can never be committed, so it
/// is logged and left out of later batches rather than holding back every later event
/// (it is deleted with them once they are committed). Any other refusal is retried.
fn refused_for_good(status: &tonic::Status, positions: &[String]) -> Option<Position> {
    let wire = WireError::from(status);
    let field = wire.field.as_deref().filter(|_| wire.kind == Kind::Validation)?;
    let position = refused_event(field).and_then(|i| positions.get(i))?;
    error!(%position, field, detail = %wire.message, "the control plane refuses a usage event; leaving it out");
    position.parse().ok()
}

/// The index `i` of a field `events[i].…` that the control plane refused.
fn refused_event(field: &str) -> Option<usize> {
    field.strip_prefix("events[")?.split_once(']')?.0.parse().ok()
}

#[cfg(test)]
#[path = "flush_tests.rs"]
mod tests;
