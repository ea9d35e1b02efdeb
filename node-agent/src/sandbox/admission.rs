//! Admission: at most `running` sandboxes run at once and at most `queue` more wait;
//! past that a request is turned away at once (503 with `Retry-After`) instead of piling
//! up, so the agent's memory and the Engine's load stay bounded.
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Running slots and a bounded waiting line.
#[derive(Debug)]
pub struct Admission {
    slots: Semaphore,
    admitted: AtomicUsize,
    running: usize,
    capacity: usize,
}

/// A place in line; dropping it leaves the line.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
}

impl Admission {
    /// `running` at once, `queue` more waiting.
    pub fn new(running: usize, queue: usize) -> Self {
        let running = running.max(1);
        Admission { slots: Semaphore::new(running), admitted: AtomicUsize::new(0), running, capacity: running + queue }
    }

    /// A place in line, or `None` when the line is full.
    pub fn enter(&self) -> Option<Ticket<'_>> {
        let mut now = self.admitted.load(Ordering::Acquire);
        loop {
            if now >= self.capacity {
                return None;
            }
            match self.admitted.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Ticket { admission: self }),
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
    pub async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.admission.slots.acquire().await.ok()
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.admission.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
