//! The arithmetic of a throttle, with no store: an [`Entry`] counts attempts in a window
//! and, past a limit, blocks its key for a time that doubles with each further attempt,
//! up to a cap. [`crate::auth::throttle`] keeps the entries in the database.
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest window or block honoured; longer ones are cut to it so that time arithmetic
/// never overflows.
const MAX_SPAN: chrono::Duration = chrono::Duration::days(3650);

/// One key's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Attempts counted in the current window.
    pub failures: u32,
    /// When the current window began.
    pub window_start: DateTime<Utc>,
    /// Until when the key is refused.
    pub blocked_until: Option<DateTime<Utc>>,
}

impl Entry {
    fn blocked_at(&self, now: DateTime<Utc>) -> bool {
        self.blocked_until.is_some_and(|u| u > now)
    }
}

/// A limit per window with exponential back-off.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    limit: u32,
    window: chrono::Duration,
    base_block: chrono::Duration,
    max_block: chrono::Duration,
}

impl Policy {
    /// Blocks a key after `limit` attempts within `window`, first for `base_block`, then
    /// doubling up to `max_block`.
    pub fn new(limit: u32, window: Duration, base_block: Duration, max_block: Duration) -> Self {
        let d = |x: Duration| chrono::Duration::from_std(x).unwrap_or(MAX_SPAN).min(MAX_SPAN);
        Policy { limit: limit.max(1), window: d(window), base_block: d(base_block), max_block: d(max_block) }
    }

    /// Counts one attempt at `now` on `entry` (`None`: the key has no count yet) before
    /// it is verified: the entry to store, or `Err(seconds)` while the key is blocked (and
    /// then nothing is counted). The attempt that reaches the limit blocks the key at once,
    /// so at most `limit` attempts per window are ever let through.
    pub fn attempt(&self, entry: Option<Entry>, now: DateTime<Utc>) -> Result<Entry, u64> {
        let fresh = Entry { failures: 0, window_start: now, blocked_until: None };
        let mut e = entry.unwrap_or(fresh);
        if let Some(until) = e.blocked_until.filter(|u| *u > now) {
            let ms = (until - now).num_milliseconds().max(0);
            return Err(u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1));
        }
        if now - e.window_start >= self.window && !e.blocked_at(now) {
            e = fresh;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.limit {
            let doublings = (e.failures - self.limit).min(20);
            let block = self.base_block.checked_mul(1 << doublings).unwrap_or(self.max_block).min(self.max_block);
            e.blocked_until = Some(now + block);
            // A block restarts the window, so the count survives the block itself.
            e.window_start = now;
        }
        Ok(e)
    }

    /// `entry` with one attempt given back; the block is lifted if the count falls below
    /// the limit again.
    pub fn undo(&self, mut entry: Entry) -> Entry {
        entry.failures = entry.failures.saturating_sub(1);
        if entry.failures < self.limit {
            entry.blocked_until = None;
        }
        entry
    }

    /// From when `entry` is worth nothing: its window and its block are both over, so the
    /// next attempt would start afresh, exactly as if the entry were absent.
    pub fn expires_at(&self, entry: &Entry) -> DateTime<Utc> {
        let window_end = entry.window_start + self.window;
        entry.blocked_until.map_or(window_end, |b| b.max(window_end))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn minutes(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    /// The policy over an in-memory store, as the database applies it.
    struct Memory(Policy, HashMap<&'static str, Entry>);

    impl Memory {
        fn new(p: Policy) -> Self {
            Memory(p, HashMap::new())
        }

        fn attempt(&mut self, key: &'static str, now: DateTime<Utc>) -> Result<(), u64> {
            let e = self.0.attempt(self.1.get(key).copied(), now)?;
            self.1.insert(key, e);
            Ok(())
        }

        fn undo(&mut self, key: &'static str) {
            if let Some(e) = self.1.get(key).copied() {
                self.1.insert(key, self.0.undo(e));
            }
        }

        fn success(&mut self, key: &'static str) {
            self.1.remove(key);
        }
    }

    #[test]
    fn blocks_at_the_limit_backs_off_and_recovers() {
        let mut th = Memory::new(Policy::new(3, minutes(15), minutes(1), minutes(15)));
        let now = t0();
        for _ in 0..3 {
            assert!(th.attempt("a", now).is_ok());
        }
        assert_eq!(th.attempt("a", now), Err(60), "the third attempt blocked the key");
        assert!(th.attempt("b", now).is_ok(), "other keys are untouched");
        let later = now + chrono::Duration::seconds(61);
        assert!(th.attempt("a", later).is_ok(), "the block ends");
        assert_eq!(th.attempt("a", later), Err(120), "the next block doubles");
        th.success("a");
        assert!(th.attempt("a", later).is_ok(), "a success clears it");
    }

    #[test]
    fn attempts_count_before_their_outcome_is_known() {
        // Parallel guesses: none has been verified yet, and still only `limit` get through.
        let mut th = Memory::new(Policy::new(5, minutes(15), minutes(1), minutes(15)));
        let admitted = (0..300).filter(|_| th.attempt("a", t0()).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn undo_gives_an_attempt_back_and_success_clears() {
        let mut th = Memory::new(Policy::new(2, minutes(15), minutes(1), minutes(15)));
        let now = t0();
        assert!(th.attempt("ip", now).is_ok());
        assert!(th.attempt("ip", now).is_ok());
        assert!(th.attempt("ip", now).is_err());
        th.undo("ip");
        assert!(th.attempt("ip", now).is_ok(), "the undone attempt is free again");
        assert!(th.attempt("ip", now).is_err(), "but only that one");
        th.undo("never seen");
        assert!(th.attempt("never seen", now).is_ok());
        th.success("ip");
        assert!(th.attempt("ip", now).is_ok());
        assert!(th.attempt("ip", now).is_ok());
        assert!(th.attempt("ip", now).is_err());
    }

    #[test]
    fn blocks_are_capped() {
        let mut th = Memory::new(Policy::new(1, minutes(15), minutes(1), minutes(5)));
        let mut now = t0();
        for _ in 0..10 {
            assert!(th.attempt("a", now).is_ok());
            now += chrono::Duration::seconds(301);
        }
        assert!(th.attempt("a", now).is_ok());
        assert_eq!(th.attempt("a", now), Err(300));
    }

    #[test]
    fn an_expired_entry_is_worth_an_absent_one() {
        // Deleting rows past `expires_at` must not change any answer.
        let p = Policy::new(3, minutes(15), minutes(1), minutes(30));
        let mut e = None;
        let mut now = t0();
        for step in 0..40 {
            let next = p.attempt(e, now);
            if let Ok(entry) = next {
                let gone = p.expires_at(&entry);
                assert!(gone >= entry.window_start + chrono::Duration::minutes(15));
                assert!(entry.blocked_until.is_none_or(|b| gone >= b));
                // At and after expiry, the stored entry and no entry answer alike.
                assert_eq!(p.attempt(Some(entry), gone), p.attempt(None, gone), "step {step}");
                e = Some(entry);
            }
            now += chrono::Duration::seconds(47);
        }
    }

    #[test]
    fn huge_spans_are_cut_not_overflowed() {
        let p = Policy::new(1, Duration::MAX, Duration::MAX, Duration::MAX);
        let e = p.attempt(None, t0()).unwrap();
        assert!(p.expires_at(&e) > t0());
        assert!(p.attempt(Some(e), t0()).is_err());
    }
}
