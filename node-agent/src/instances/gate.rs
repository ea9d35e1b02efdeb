//! The node's door for Invoke: which refusals ran nothing (they carry the
//! `souq_proto::outcome` mark, so the edge may try another replica whatever the
//! method), and the drain at shutdown, which refuses new calls and waits for those in
//! flight.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use souq_proto::{Kind, WireError, outcome};
use tokio::sync::watch;

use crate::error::Error;

/// A failed Invoke, and whether it ran nothing.
#[derive(Debug)]
pub struct InvokeError {
    /// What went wrong.
    pub error: Error,
    /// Certainly nothing of the call reached the handler.
    pub ran_nothing: bool,
}

impl InvokeError {
    /// A refusal before anything was handed to the handler.
    pub fn not_run(error: Error) -> Self {
        InvokeError { error, ran_nothing: true }
    }

    /// A failure after the call was handed to the handler: it may have run.
    pub fn maybe_run(error: Error) -> Self {
        InvokeError { error, ran_nothing: false }
    }
}

impl From<InvokeError> for tonic::Status {
    fn from(e: InvokeError) -> Self {
        let status = tonic::Status::from(e.error);
        if e.ran_nothing { outcome::not_run(status) } else { status }
    }
}

/// Counts the calls in flight and, once draining, refuses new ones.
#[derive(Debug, Clone)]
pub struct Gate {
    draining: Arc<AtomicBool>,
    in_flight: Arc<watch::Sender<usize>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate { draining: Arc::default(), in_flight: Arc::new(watch::Sender::new(0)) }
    }
}

/// One call's place in the [`Gate`], given back when dropped.
#[derive(Debug)]
pub struct Pass {
    in_flight: Arc<watch::Sender<usize>>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Gate {
    /// A place for one call, or a refusal that ran nothing once the drain has begun.
    pub fn enter(&self) -> Result<Pass, InvokeError> {
        // Counted first, then checked: a drain that starts in between either sees this
        // call in flight or this call sees the drain, never neither.
        self.in_flight.send_modify(|n| *n += 1);
        let pass = Pass { in_flight: self.in_flight.clone() };
        if self.draining.load(Ordering::SeqCst) {
            return Err(InvokeError::not_run(Error::Wire(WireError {
                retry_after: Some(1),
                ..WireError::new(Kind::Unavailable, "the node is shutting down")
            })));
        }
        Ok(pass)
    }

    /// Refuses new calls from now on and waits, at most `patience`, until the calls in
    /// flight have ended. Returns how many were still running then.
    pub async fn drain(&self, patience: Duration) -> usize {
        self.draining.store(true, Ordering::SeqCst);
        let mut rx = self.in_flight.subscribe();
        let _ = tokio::time::timeout(patience, rx.wait_for(|n| *n == 0)).await;
        *rx.borrow()
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drain_refuses_new_calls_and_waits_for_those_in_flight() {
        let gate = Gate::default();
        let running = gate.enter().expect("open");
        assert_eq!(gate.in_flight(), 1);
        let drain = tokio::spawn({
            let gate = gate.clone();
            async move { gate.drain(Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        assert!(gate.is_draining());
        let refused = gate.enter().expect_err("draining");
        assert!(refused.ran_nothing);
        assert_eq!(gate.in_flight(), 1, "a refused call leaves no count behind");
        let status = tonic::Status::from(refused);
        assert_eq!(outcome::reached(&status), outcome::Reached::No);
        drop(running);
        assert_eq!(drain.await.expect("drain"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_is_bounded() {
        let gate = Gate::default();
        let _stuck = gate.enter().expect("open");
        assert_eq!(gate.drain(Duration::from_secs(3)).await, 1);
    }

    #[test]
    fn only_calls_that_ran_nothing_are_marked() {
        let e = || Error::Wire(WireError::new(Kind::Unavailable, "x"));
        assert!(outcome::said_not_run(&tonic::Status::from(InvokeError::not_run(e()))));
        assert!(!outcome::said_not_run(&tonic::Status::from(InvokeError::maybe_run(e()))));
    }
}
