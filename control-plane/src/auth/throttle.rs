//! Login throttling: counts attempts per key (an account, a client address) and, past a
//! limit, blocks that key for a time that doubles with each further failure, up to a cap.
//! An attempt is counted before its password is checked, so parallel guesses cannot slip
//! past the limit while the first ones are still being verified; a success clears the
//! account's key and gives the attempt back. It backs off rather than locking anyone out
//! for good, and it never stops counting: when full it forgets its oldest keys.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};

/// Most keys remembered; past it, keys whose window is over go first, then the oldest.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: DateTime<Utc>,
    blocked_until: Option<DateTime<Utc>>,
}

impl Entry {
    fn blocked_at(&self, now: DateTime<Utc>) -> bool {
        self.blocked_until.is_some_and(|u| u > now)
    }
}

/// An attempt counter with exponential back-off.
#[derive(Debug)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
    limit: u32,
    window: chrono::Duration,
    base_block: chrono::Duration,
    max_block: chrono::Duration,
    max_keys: usize,
}

impl Throttle {
    /// Blocks a key after `limit` attempts within `window`, first for `base_block`, then
    /// doubling up to `max_block`.
    pub fn new(limit: u32, window: Duration, base_block: Duration, max_block: Duration) -> Self {
        let d = |x: Duration| chrono::Duration::from_std(x).unwrap_or(chrono::Duration::MAX);
        Throttle {
            entries: Mutex::default(),
            limit: limit.max(1),
            window: d(window),
            base_block: d(base_block),
            max_block: d(max_block),
            max_keys: MAX_KEYS,
        }
    }

    /// The same throttle remembering at most `max_keys` keys (at least one).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// Counts an attempt for `key` before it is verified: `Err(seconds)` while `key` is
    /// blocked (and then nothing is counted). The attempt that reaches the limit blocks the
    /// key at once, so at most `limit` attempts per window are ever let through, however
    /// many arrive together. Give the attempt back with [`Throttle::undo`] when its
    /// outcome told the client nothing, or clear the key with [`Throttle::success`].
    pub fn attempt(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let mut entries = self.entries.lock().map_err(|_| 1u64)?;
        if let Some(until) = entries.get(key).and_then(|e| e.blocked_until).filter(|u| *u > now) {
            let ms = (until - now).num_milliseconds().max(0);
            return Err(u64::try_from(ms).unwrap_or(0).div_ceil(1000).max(1));
        }
        if entries.len() >= self.max_keys && !entries.contains_key(key) {
            self.make_room(&mut entries, now);
        }
        let e = entries.entry(key.to_owned()).or_insert(Entry { failures: 0, window_start: now, blocked_until: None });
        if now - e.window_start >= self.window && !e.blocked_at(now) {
            *e = Entry { failures: 0, window_start: now, blocked_until: None };
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.limit {
            let doublings = (e.failures - self.limit).min(20);
            let block = self.base_block.checked_mul(1 << doublings).unwrap_or(self.max_block).min(self.max_block);
            e.blocked_until = Some(now + block);
            // A block restarts the window, so the count survives the block itself.
            e.window_start = now;
        }
        Ok(())
    }

    /// Gives back one attempt counted for `key`; lifts the block if the count falls below
    /// the limit again.
    pub fn undo(&self, key: &str) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if let Some(e) = entries.get_mut(key) {
            e.failures = e.failures.saturating_sub(1);
            if e.failures < self.limit {
                e.blocked_until = None;
            }
        }
    }

    /// Clears `key` after a success.
    pub fn success(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// Forgets every key `matches` picks: their counts and their blocks.
    pub fn forget_matching(&self, matches: impl Fn(&str) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|k, _| !matches(k));
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frees at least one slot: first drops keys whose window is over and that are not
    /// blocked; if that is not enough, drops the oldest sixteenth, unblocked keys first.
    /// The batch keeps the cost of a flood of new keys amortised.
    fn make_room(&self, entries: &mut HashMap<String, Entry>, now: DateTime<Utc>) {
        let window = self.window;
        entries.retain(|_, e| now - e.window_start < window || e.blocked_at(now));
        if entries.len() < self.max_keys {
            return;
        }
        let evict = (self.max_keys / 16).max(1).min(entries.len());
        let mut ages: Vec<(bool, DateTime<Utc>, &String)> =
            entries.iter().map(|(k, e)| (e.blocked_at(now), e.window_start, k)).collect();
        ages.select_nth_unstable(evict - 1);
        let victims: Vec<String> = ages[..evict].iter().map(|(_, _, k)| (*k).clone()).collect();
        for k in victims {
            entries.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn minutes(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    #[test]
    fn blocks_at_the_limit_backs_off_and_recovers() {
        let th = Throttle::new(3, minutes(15), minutes(1), minutes(15));
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
        let th = Throttle::new(5, minutes(15), minutes(1), minutes(15));
        let admitted = (0..300).filter(|_| th.attempt("a", t0()).is_ok()).count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn undo_gives_an_attempt_back_and_success_clears() {
        let th = Throttle::new(2, minutes(15), minutes(1), minutes(15));
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
        let th = Throttle::new(1, minutes(15), minutes(1), minutes(5));
        let mut now = t0();
        for _ in 0..10 {
            assert!(th.attempt("a", now).is_ok());
            now += chrono::Duration::seconds(301);
        }
        assert!(th.attempt("a", now).is_ok());
        assert_eq!(th.attempt("a", now), Err(300));
    }

    #[test]
    fn a_full_throttle_evicts_the_oldest_and_keeps_counting() {
        let th = Throttle::new(2, minutes(15), minutes(1), minutes(15)).with_max_keys(32);
        let now = t0();
        // A blocked key, then a flood of fresh keys, all within the window.
        assert!(th.attempt("victim", now).is_ok());
        assert!(th.attempt("victim", now).is_ok());
        for i in 0..31 {
            assert!(th.attempt(&format!("old{i}"), now + chrono::Duration::seconds(1)).is_ok());
        }
        assert_eq!(th.len(), 32);
        let later = now + chrono::Duration::seconds(2);
        for i in 0..1000 {
            assert!(th.attempt(&format!("new{i}"), later).is_ok());
            assert!(th.len() <= 32);
        }
        // A new key is still counted and blocked.
        assert!(th.attempt("fresh", later).is_ok());
        assert!(th.attempt("fresh", later).is_ok());
        assert!(th.attempt("fresh", later).is_err(), "counting goes on at capacity");
        // Unblocked keys go before blocked ones, the oldest first.
        assert!(th.attempt("victim", later).is_err(), "the blocked key survived the flood");
    }
}
