//! Admission: at most `running` sandboxes run at once and at most `queue` more wait;
//! past that a request is turned away at once (503 with `Retry-After`) instead of piling
//! up, so the agent's memory and the Engine's load stay bounded. Before that, one user
//! may have at most `per_user` executes on the node, running or waiting ([`PerUser`]),
//! so one account cannot take every slot from the others. The line's depth, its
//! capacity and the executes running are kept in the agent's gauges as they change.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::metrics::Metrics;

/// Running slots and a bounded waiting line. The queue depth gauge counts the places
/// taken past the running slots, so it reaches the capacity gauge exactly when the next
/// execute is turned away.
#[derive(Debug)]
pub struct Admission {
    slots: Semaphore,
    admitted: AtomicUsize,
    running: usize,
    capacity: usize,
    metrics: Arc<Metrics>,
}

/// A place in line; dropping it leaves the line.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
}

/// A running slot; dropping it gives it back.
#[derive(Debug)]
pub struct Running<'a> {
    _permit: SemaphorePermit<'a>,
    admission: &'a Admission,
}

impl Admission {
    /// `running` at once, `queue` more waiting; counted in fresh metrics until
    /// [`Admission::with_metrics`].
    pub fn new(running: usize, queue: usize) -> Self {
        Admission::with_metrics(running, queue, Arc::default())
    }

    /// [`Admission::new`], counted in `metrics`.
    pub fn with_metrics(running: usize, queue: usize, metrics: Arc<Metrics>) -> Self {
        let running = running.max(1);
        metrics.admission_queue_capacity.set(i64::try_from(queue).unwrap_or(i64::MAX));
        Admission {
            slots: Semaphore::new(running),
            admitted: AtomicUsize::new(0),
            running,
            capacity: running + queue,
            metrics,
        }
    }

    /// A place in line, or `None` when the line is full.
    pub fn enter(&self) -> Option<Ticket<'_>> {
        let mut now = self.admitted.load(Ordering::Acquire);
        loop {
            if now >= self.capacity {
                return None;
            }
            match self.admitted.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // Past the running slots, a place is one of the queue's.
                    if now >= self.running {
                        self.metrics.admission_queue_depth.inc();
                    }
                    return Some(Ticket { admission: self });
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Sandboxes running now.
    pub fn running(&self) -> usize {
        self.running - self.slots.available_permits()
    }

    /// Most sandboxes running at once.
    pub fn max_running(&self) -> usize {
        self.running
    }
}

impl Ticket<'_> {
    /// Waits for a running slot.
    pub async fn slot(&self) -> Option<Running<'_>> {
        let permit = self.admission.slots.acquire().await.ok()?;
        self.admission.metrics.running_executes.inc();
        Some(Running { _permit: permit, admission: self.admission })
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let before = self.admission.admitted.fetch_sub(1, Ordering::AcqRel);
        if before > self.admission.running {
            self.admission.metrics.admission_queue_depth.dec();
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.admission.metrics.running_executes.dec();
    }
}

/// At most `cap` executes of one user at once, running or waiting. A user is remembered
/// only while they have one, so the map holds no more users than executes in flight.
#[derive(Debug)]
pub struct PerUser {
    cap: usize,
    users: Mutex<HashMap<String, usize>>,
}

/// One of a user's places; dropping it gives it back.
#[derive(Debug)]
pub struct UserTurn<'a> {
    per_user: &'a PerUser,
    user: String,
}

impl PerUser {
    /// At most `cap` (at least 1) executes per user.
    pub fn new(cap: usize) -> Self {
        PerUser { cap: cap.max(1), users: Mutex::default() }
    }

    /// Most executes of one user at once.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// A place for `user`, or `None` when they have `cap` already.
    pub fn enter(&self, user: &str) -> Option<UserTurn<'_>> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let n = users.entry(user.to_owned()).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(UserTurn { per_user: self, user: user.to_owned() })
    }

    /// Users with an execute in flight now.
    pub fn users(&self) -> usize {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Drop for UserTurn<'_> {
    fn drop(&mut self) {
        let mut users = self.per_user.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = users.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_gets_at_most_the_cap_and_is_forgotten_after() {
        let p = PerUser::new(2);
        let a1 = p.enter("a").unwrap();
        let a2 = p.enter("a").unwrap();
        assert!(p.enter("a").is_none(), "a third of a's is refused");
        let b = p.enter("b").expect("another user is not held up by a");
        drop(a1);
        let a3 = p.enter("a").expect("a's place came back");
        drop((a2, a3, b));
        assert_eq!(p.users(), 0, "nobody is remembered without an execute");
        assert!(p.enter("a").is_some());
    }

    #[tokio::test]
    async fn admits_running_plus_queue_then_refuses() {
        let a = Admission::new(1, 2);
        let t1 = a.enter().unwrap();
        let _t2 = a.enter().unwrap();
        let _t3 = a.enter().unwrap();
        assert!(a.enter().is_none(), "the line is full");
        let s1 = t1.slot().await.unwrap();
        assert_eq!(a.running(), 1);
        drop(s1);
        drop(t1);
        assert!(a.enter().is_some(), "leaving makes room");
    }

    #[tokio::test]
    async fn the_gauges_follow_the_line_and_the_slots() {
        let m = Arc::new(Metrics::default());
        let a = Admission::with_metrics(1, 2, m.clone());
        let gauges = || (m.admission_queue_depth.get(), m.running_executes.get(), m.admission_queue_capacity.get());
        assert_eq!(gauges(), (0, 0, 2));
        let t1 = a.enter().unwrap();
        assert_eq!(gauges(), (0, 0, 2), "a place of the running slots is not queued");
        let t2 = a.enter().unwrap();
        let t3 = a.enter().unwrap();
        assert_eq!(gauges(), (2, 0, 2), "the queue is full");
        assert!(a.enter().is_none());
        assert_eq!(gauges(), (2, 0, 2), "a refusal changes nothing");
        let s1 = t1.slot().await.unwrap();
        assert_eq!(gauges(), (2, 1, 2), "one runs");
        drop(t2);
        assert_eq!(gauges(), (1, 1, 2), "one left the queue");
        drop(s1);
        drop(t1);
        assert_eq!(gauges(), (0, 0, 2), "the run ended; the last one waiting now has a slot's place");
        drop(t3);
        assert_eq!(gauges(), (0, 0, 2));
    }
}
