//! Login throttling: counts failures per key (an account, a client address) and, past a
//! limit, blocks that key for a time that doubles with each further failure, up to a cap.
//! It backs off rather than locking anyone out for good; a success clears the key.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};

/// Most keys remembered; past it, keys whose window is over are dropped first.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: DateTime<Utc>,
    blocked_until: Option<DateTime<Utc>>,
}

/// A failure counter with exponential back-off.
#[derive(Debug)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
    limit: u32,
    window: chrono::Duration,
    base_block: chrono::Duration,
    max_block: chrono::Duration,
}

impl Throttle {
    /// Blocks a key after `limit` failures within `window`, first for `base_block`, then
    /// doubling up to `max_block`.
    pub fn new(limit: u32, window: Duration, base_block: Duration, max_block: Duration) -> Self {
        let d = |x: Duration| chrono::Duration::from_std(x).unwrap_or(chrono::Duration::MAX);
        Throttle { entries: Mutex::default(), limit, window: d(window), base_block: d(base_block), max_block: d(max_block) }
    }

    /// `Err(seconds)` while `key` is blocked.
    pub fn check(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let entries = self.entries.lock().map_err(|_| 1u64)?;
        match entries.get(key).and_then(|e| e.blocked_until) {
            Some(until) if until > now => {
                let ms = (until - now).num_milliseconds().max(0);
                Err(u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure for `key`.
    pub fn failure(&self, key: &str, now: DateTime<Utc>) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= MAX_KEYS && !entries.contains_key(key) {
            let window = self.window;
            entries.retain(|_, e| now - e.window_start < window || e.blocked_until.is_some_and(|u| u > now));
            if entries.len() >= MAX_KEYS {
                return;
            }
        }
        let e = entries.entry(key.to_owned()).or_insert(Entry { failures: 0, window_start: now, blocked_until: None });
        if now - e.window_start >= self.window && e.blocked_until.is_none_or(|u| u <= now) {
            *e = Entry { failures: 0, window_start: now, blocked_until: None };
        }
        e.failures += 1;
        if e.failures >= self.limit {
            let doublings = (e.failures - self.limit).min(20);
            let block = self.base_block.checked_mul(1 << doublings).unwrap_or(self.max_block).min(self.max_block);
            e.blocked_until = Some(now + block);
            // A block restarts the window, so the count survives the block itself.
            e.window_start = now;
        }
    }

    /// Clears `key` after a success.
    pub fn success(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn blocks_after_the_limit_backs_off_and_recovers() {
        let th = Throttle::new(3, Duration::from_secs(900), Duration::from_secs(60), Duration::from_secs(900));
        let now = t0();
        for _ in 0..2 {
            th.failure("a", now);
            assert!(th.check("a", now).is_ok());
        }
        th.failure("a", now);
        assert_eq!(th.check("a", now), Err(60));
        assert!(th.check("b", now).is_ok(), "other keys are untouched");
        let later = now + chrono::Duration::seconds(61);
        assert!(th.check("a", later).is_ok(), "the block ends");
        th.failure("a", later);
        assert_eq!(th.check("a", later), Err(120), "the next block doubles");
        th.success("a");
        assert!(th.check("a", later).is_ok(), "a success clears it");
    }

    #[test]
    fn blocks_are_capped() {
        let th = Throttle::new(1, Duration::from_secs(900), Duration::from_secs(60), Duration::from_secs(300));
        let mut now = t0();
        for _ in 0..10 {
            th.failure("a", now);
            now += chrono::Duration::seconds(301);
        }
        th.failure("a", now);
        assert_eq!(th.check("a", now), Err(300));
    }
}
