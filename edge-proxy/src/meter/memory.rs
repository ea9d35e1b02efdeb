//! The in-memory metering queue of the embedded default: events wait here, at positions
//! `0-1`, `0-2`, …, until the control plane has committed them. It lives and dies with
//! the process: a crash loses what was not yet flushed (at most about a second of
//! calls); Redis is the durable choice.
use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use souq_proto::metering::UsageEvent;
use tokio::sync::OwnedSemaphorePermit;

use super::event::Position;

/// One waiting event, and its share of the meter's capacity.
struct Queued {
    seq: u64,
    event: UsageEvent,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Inner {
    /// The last sequence number given.
    last: u64,
    queue: VecDeque<Queued>,
}

/// Events not yet committed, in position order.
#[derive(Default)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
}

impl MemoryQueue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `event` at the next position; `permit` is released once it is committed.
    /// Returns how many events wait.
    pub fn push(&self, event: UsageEvent, permit: Option<OwnedSemaphorePermit>) -> usize {
        let mut inner = self.lock();
        inner.last += 1;
        let seq = inner.last;
        inner.queue.push_back(Queued { seq, event, _permit: permit });
        inner.queue.len()
    }

    /// Copies of the first `max` events, with their positions.
    pub fn read(&self, max: usize) -> Vec<UsageEvent> {
        self.lock()
            .queue
            .iter()
            .take(max)
            .map(|q| UsageEvent { position: Position { ms: 0, seq: q.seq }.to_string(), ..q.event.clone() })
            .collect()
    }

    /// Forgets every event at or before `through`; returns how many.
    pub fn delete_through(&self, through: Position) -> usize {
        let mut inner = self.lock();
        let mut n = 0;
        while inner.queue.front().is_some_and(|q| Position { ms: 0, seq: q.seq } <= through) {
            inner.queue.pop_front();
            n += 1;
        }
        n
    }

    /// How many events wait.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    fn event(api: &str) -> UsageEvent {
        UsageEvent { api_id: api.into(), ..UsageEvent::default() }
    }

    #[test]
    fn events_get_increasing_positions_and_leave_only_when_committed() {
        let q = MemoryQueue::default();
        for api in ["a", "b", "c"] {
            q.push(event(api), None);
        }
        let batch = q.read(2);
        let got: Vec<(&str, &str)> = batch.iter().map(|e| (e.position.as_str(), e.api_id.as_str())).collect();
        assert_eq!(got, [("0-1", "a"), ("0-2", "b")]);
        // Reading again (a retry) sees the same events at the same positions.
        assert_eq!(q.read(2), batch);
        // The control plane committed through 0-1 only: one leaves.
        assert_eq!(q.delete_through("0-1".parse().expect("pos")), 1);
        assert_eq!(q.read(10).iter().map(|e| e.position.as_str()).collect::<Vec<_>>(), ["0-2", "0-3"]);
        // An ack for a position already gone, or before everything left, deletes nothing.
        assert_eq!(q.delete_through("0-1".parse().expect("pos")), 0);
        assert_eq!(q.delete_through(Position::default()), 0);
        // An ack past the end deletes everything; positions keep growing after it.
        assert_eq!(q.delete_through("0-99".parse().expect("pos")), 2);
        assert!(q.is_empty());
        q.push(event("d"), None);
        assert_eq!(q.read(1)[0].position, "0-4");
    }

    #[test]
    fn capacity_is_released_when_events_are_committed() {
        let capacity = Arc::new(Semaphore::new(2));
        let q = MemoryQueue::default();
        for api in ["a", "b"] {
            let permit = capacity.clone().try_acquire_owned().expect("room");
            q.push(event(api), Some(permit));
        }
        assert!(capacity.clone().try_acquire_owned().is_err(), "full");
        q.delete_through("0-1".parse().expect("pos"));
        assert!(capacity.clone().try_acquire_owned().is_ok(), "room again");
    }
}
