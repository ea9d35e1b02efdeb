//! Time, injected: the control plane reads the clock through [`Clock`] so that expiry,
//! throttling and retries can be tested by moving time instead of sleeping.
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock standing at the system's current time.
    pub fn new() -> Self {
        ManualClock(Mutex::new(Utc::now()))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        if let Ok(mut t) = self.0.lock() {
            *t += chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map_or_else(|_| Utc::now(), |t| *t)
    }
}
