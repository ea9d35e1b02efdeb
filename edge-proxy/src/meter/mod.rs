//! Metering: every call and execute that ran becomes one usage event, counted exactly
//! once by the control plane.
//!
//! - A request is *admitted* before it runs: it takes a share of the meter's capacity,
//!   or is refused with 503, so no call is ever served unmetered.
//! - Its event is *committed* before the answer leaves: into the Redis stream (durable;
//!   [`redis`], group-committed by [`writer`]) or the in-memory queue (the embedded
//!   default; lost on a crash, [`memory`]).
//! - The [`flush`] task reports events in batches to `Metering.ReportUsage` and deletes
//!   them only once the control plane has acknowledged them; it skips what it has
//!   already committed, so a batch sent twice counts once.
pub mod event;
pub mod flush;
pub mod memory;
pub mod redis;
pub mod writer;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::http::StatusCode;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::error;

use crate::error::ApiError;
pub use event::{Draft, Kind};

/// Most events waiting in this process (in flight to Redis, waiting for a failing Redis,
/// or, in memory mode, waiting for the control plane). Past it, calls get 503.
pub const MAX_PENDING: usize = 100_000;
/// Most entries (group commits, of 1 to 64 events each) the Redis stream may hold before
/// calls get 503: the control plane has been away too long.
pub const MAX_STREAM_BACKLOG: u64 = 200_000;
/// Most events in one batch to the control plane; a full batch is flushed at once.
pub const BATCH: usize = 1_000;

/// Where events wait until the control plane has them.
pub enum Store {
    /// In this process.
    Memory(memory::MemoryQueue),
    /// In a Redis stream, where the group-commit writer puts what its inbox receives.
    Redis(Arc<redis::RedisStream>, writer::Inbox),
}

/// What every handle of the meter shares.
pub struct Shared {
    /// The stream's name in `UsageBatch.source`.
    pub source: String,
    /// Where events wait.
    pub store: Store,
    capacity: Arc<Semaphore>,
    /// Set by the flusher while the Redis stream holds more than [`MAX_STREAM_BACKLOG`].
    backlogged: AtomicBool,
    /// Wakes the flusher early when a full batch waits.
    flush_now: Arc<Notify>,
}

/// The meter: a cheap handle, or nothing when metering is off.
#[derive(Clone, Default)]
pub struct Meter {
    shared: Option<Arc<Shared>>,
}

impl Meter {
    /// No metering (and, by the same switch, no rate limiting).
    pub fn off() -> Self {
        Meter { shared: None }
    }

    /// Metering in memory, as the stream `mem-<random>`.
    pub fn in_memory() -> Self {
        Self::with_store(
            format!("mem-{}", uuid::Uuid::new_v4().simple()),
            Store::Memory(memory::MemoryQueue::default()),
        )
    }

    /// Metering into the Redis stream of `edge_id`.
    pub fn in_redis(conn: ::redis::aio::ConnectionManager, edge_id: &str) -> Self {
        Self::with_store(
            edge_id.to_owned(),
            Store::Redis(Arc::new(redis::RedisStream::new(conn, edge_id)), writer::Inbox::default()),
        )
    }

    fn with_store(source: String, store: Store) -> Self {
        Meter {
            shared: Some(Arc::new(Shared {
                source,
                store,
                capacity: Arc::new(Semaphore::new(MAX_PENDING)),
                backlogged: AtomicBool::new(false),
                flush_now: Arc::default(),
            })),
        }
    }

    /// Whether metering is on.
    pub fn is_on(&self) -> bool {
        self.shared.is_some()
    }

    /// `off`, `memory` or `redis`, for logs.
    pub fn mode(&self) -> &'static str {
        match self.shared.as_deref().map(|s| &s.store) {
            None => "off",
            Some(Store::Memory(_)) => "memory",
            Some(Store::Redis(..)) => "redis",
        }
    }

    /// The Redis writer task (once), which runs until `drained` and nothing waits; `None`
    /// in memory mode.
    pub fn redis_writer(
        &self,
        drained: tokio_util::sync::CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let shared = self.shared.as_ref()?;
        let Store::Redis(stream, inbox) = &shared.store else {
            return None;
        };
        Some(inbox.writer(stream.clone(), shared.flush_now.clone(), drained)?.run())
    }

    /// Reads the events admitted and not yet handed on (calls under way included): the
    /// meter's capacity in use. 0 when metering is off or the meter is gone.
    pub fn backlog_probe(&self) -> impl Fn() -> i64 + Send + Sync + 'static {
        let shared = self.shared.as_ref().map(Arc::downgrade);
        move || {
            shared.as_ref().and_then(std::sync::Weak::upgrade).map_or(0, |s| {
                i64::try_from(MAX_PENDING.saturating_sub(s.capacity.available_permits())).unwrap_or(i64::MAX)
            })
        }
    }

    /// The shared state, for the flusher; `None` when metering is off.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Admits a request that is about to run: `None` when metering is off, 503 when the
    /// meter cannot take another event.
    pub fn admit(&self, draft: Draft) -> Result<Option<Admission>, ApiError> {
        let Some(shared) = &self.shared else {
            return Ok(None);
        };
        let full = || ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "usage metering is backed up; calls resume when it catches up",
            )
        };
        if shared.backlogged.load(Ordering::Relaxed) {
            return Err(full());
        }
        let permit = shared.capacity.clone().try_acquire_owned().map_err(|_| full())?;
        Ok(Some(Admission { shared: shared.clone(), permit: Some(permit), draft: Some(draft) }))
    }
}

impl Shared {
    /// Hands `event` to the store; the receiver is told once it is safe there (Redis),
    /// `None` when it already is (memory).
    fn submit(
        &self,
        event: souq_proto::metering::UsageEvent,
        permit: OwnedSemaphorePermit,
        wait: bool,
    ) -> Option<oneshot::Receiver<()>> {
        match &self.store {
            Store::Memory(q) => {
                if q.push(event, Some(permit)) >= BATCH {
                    self.flush_now.notify_one();
                }
                None
            }
            Store::Redis(_, inbox) => {
                let (tx, rx) = if wait {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                } else {
                    (None, None)
                };
                if !inbox.submit(writer::Pending { event, permit: Some(permit), ack: tx }) {
                    error!("the usage writer is gone; an event is lost");
                }
                rx
            }
        }
    }

    /// Marks the Redis stream as over (or back under) its backlog limit.
    pub(crate) fn set_backlogged(&self, over: bool) {
        self.backlogged.store(over, Ordering::Relaxed);
    }

    /// The flusher's wake-up.
    pub(crate) fn flush_now(&self) -> &Arc<Notify> {
        &self.flush_now
    }
}

/// An admitted request. [`Admission::commit`] records its event; [`Admission::cancel`]
/// records none (it never ran). Dropped without either (the client went away while it
/// ran), it records the event with status 499 without waiting.
pub struct Admission {
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
    draft: Option<Draft>,
}

/// Status of a call whose client went away before the answer (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

impl Admission {
    /// Records the event of the answer and waits until it is safe: in Redis, or queued
    /// in memory. 503 if the event could not be recorded.
    pub async fn commit(mut self, status: u16, bytes_out: u64) -> Result<(), ApiError> {
        let (Some(draft), Some(permit)) = (self.draft.take(), self.permit.take()) else {
            return Ok(());
        };
        let Some(done) = self.shared.submit(draft.finish(status, bytes_out), permit, true) else {
            return Ok(());
        };
        done.await.map_err(|_| {
            error!("a usage event was not acknowledged");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the call's usage could not be recorded")
        })
    }

    /// Records nothing: the request never reached a handler.
    pub fn cancel(mut self) {
        self.draft = None;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let (Some(draft), Some(permit)) = (self.draft.take(), self.permit.take()) {
            let _ = self.shared.submit(draft.finish(CLIENT_CLOSED, 0), permit, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn draft() -> Draft {
        Draft {
            api_id: "a".into(),
            user_id: "u".into(),
            key_id: String::new(),
            subscription_id: String::new(),
            kind: Kind::Call,
            bytes_in: 1,
            started: Instant::now(),
            ts_ms: 1,
        }
    }

    fn queue(m: &Meter) -> &memory::MemoryQueue {
        match &m.shared().expect("on").store {
            Store::Memory(q) => q,
            Store::Redis(..) => panic!("memory expected"),
        }
    }

    #[tokio::test]
    async fn committed_cancelled_and_abandoned_admissions() {
        let m = Meter::in_memory();
        assert!(m.shared().expect("on").source.starts_with("mem-"));
        let backlog = m.backlog_probe();
        m.admit(draft()).expect("room").expect("on").commit(200, 5).await.expect("recorded");
        assert_eq!(backlog(), 1, "queued until the control plane has it");
        m.admit(draft()).expect("room").expect("on").cancel();
        drop(m.admit(draft()).expect("room").expect("on"));
        let events = queue(&m).read(10);
        let got: Vec<(&str, u32, u64)> = events.iter().map(|e| (e.position.as_str(), e.status, e.bytes_out)).collect();
        assert_eq!(got, [("0-1", 200, 5), ("0-2", 499, 0)]);
        assert_eq!(backlog(), 2);
        assert!(Meter::off().admit(draft()).expect("off").is_none());
        assert_eq!(Meter::off().backlog_probe()(), 0);
    }

    #[tokio::test]
    async fn a_full_meter_refuses_with_503_and_a_backlog_too() {
        let m = Meter::in_memory();
        let shared = m.shared().expect("on").clone();
        let held = shared.capacity.clone().try_acquire_many_owned(MAX_PENDING as u32).expect("all");
        let e = m.admit(draft()).err().expect("full");
        assert_eq!((e.status, e.retry_after), (StatusCode::SERVICE_UNAVAILABLE, Some(5)));
        drop(held);
        assert!(m.admit(draft()).is_ok());
        shared.set_backlogged(true);
        assert!(m.admit(draft()).is_err());
    }
}
