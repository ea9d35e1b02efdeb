//! The in-memory limiter: the same GCRA and monthly counter as the Redis script, in one
//! map behind a mutex. Used when no Redis is configured, and while Redis fails. Bounded:
//! past [`MAX_ENTRIES`] subscriptions, idle entries are evicted.
use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{
    Limits, Verdict,
    gcra::{self, Rate},
    month::{Month, secs_until_next_month},
};

/// Most subscriptions held before idle ones are evicted.
pub const MAX_ENTRIES: usize = 100_000;
/// An entry unused this long may be evicted, even with a count for this month: its count
/// is then rebuilt from the control plane's (`Grant.used_this_month`).
const IDLE: Duration = Duration::from_secs(3600);

/// One subscription's state.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Theoretical arrival time, µs on this limiter's clock.
    tat: u64,
    /// The month `used` counts.
    month: Month,
    /// Calls counted this month.
    used: u64,
    /// When it was last used, µs on this limiter's clock.
    last: u64,
}

/// Rate and quota state per subscription, in this process.
pub struct MemoryLimiter {
    entries: Mutex<HashMap<String, Entry>>,
    /// The origin of the monotonic clock GCRA runs on.
    origin: Instant,
}

impl Default for MemoryLimiter {
    fn default() -> Self {
        MemoryLimiter { entries: Mutex::default(), origin: Instant::now() }
    }
}

impl MemoryLimiter {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Decides one call now; see [`super::Limiter::check`].
    pub fn check(&self, limits: &Limits<'_>, month: Month, now_unix_ms: i64) -> Verdict {
        self.check_at(limits, month, self.now_us(), now_unix_ms)
    }

    /// Decides one call at `now_us` (this limiter's clock) in `month`.
    fn check_at(&self, limits: &Limits<'_>, month: Month, now_us: u64, now_unix_ms: i64) -> Verdict {
        let mut map = self.lock();
        if !map.contains_key(limits.subscription_id) && map.len() >= MAX_ENTRIES {
            evict(&mut map, month, now_us);
        }
        let e = map.entry(limits.subscription_id.to_owned()).or_insert(Entry { tat: 0, month, used: 0, last: now_us });
        e.last = now_us;
        if e.month != month {
            *e = Entry { tat: e.tat, month, used: 0, last: now_us };
        }
        e.used = e.used.max(limits.used_base);
        if e.used >= limits.monthly_quota {
            return Verdict::QuotaExceeded { retry_after_secs: secs_until_next_month(now_unix_ms) };
        }
        let decision = gcra::check(e.tat, now_us, Rate { per_minute: u64::from(limits.per_minute) });
        if let gcra::Decision::Allow { tat, .. } = decision {
            e.tat = tat;
            e.used += 1;
        }
        Verdict::of_gcra(decision, limits.per_minute)
    }

    /// Gives back one call of this month's count.
    pub fn refund(&self, limits: &Limits<'_>, month: Month) {
        if let Some(e) = self.lock().get_mut(limits.subscription_id)
            && e.month == month
        {
            e.used = e.used.saturating_sub(1);
        }
    }

    /// How many subscriptions are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees room: first entries idle past [`IDLE`] or counting an old month; if that is not
/// enough, every entry whose rate state has run out (its TAT has passed), keeping only
/// callers being limited right now. Their counts are rebuilt from the grants' counts.
fn evict(map: &mut HashMap<String, Entry>, month: Month, now_us: u64) {
    let idle_us = u64::try_from(IDLE.as_micros()).unwrap_or(u64::MAX);
    map.retain(|_, e| e.month == month && now_us.saturating_sub(e.last) < idle_us);
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, e| e.tat > now_us);
    }
    if map.len() >= MAX_ENTRIES {
        tracing::warn!(entries = map.len(), "the in-memory limiter is full of active callers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::gcra::SECOND_US;

    const MARCH: Month = Month { year: 2025, month: 3 };
    const APRIL: Month = Month { year: 2025, month: 4 };

    fn limits(sub: &str, per_minute: u32, quota: u64, base: u64) -> Limits<'_> {
        Limits { subscription_id: sub, per_minute, monthly_quota: quota, used_base: base }
    }

    #[test]
    fn a_burst_passes_then_the_rate_is_enforced() {
        let l = MemoryLimiter::default();
        let lim = limits("s", 60, 1_000, 0);
        let t0 = 10 * SECOND_US;
        for i in 0..60 {
            assert!(matches!(l.check_at(&lim, MARCH, t0, 0), Verdict::Allowed(_)), "call {i}");
        }
        let v = l.check_at(&lim, MARCH, t0, 0);
        assert!(matches!(v, Verdict::RateLimited { retry_after_secs: 1, .. }), "{v:?}");
        assert!(matches!(l.check_at(&lim, MARCH, t0 + SECOND_US, 0), Verdict::Allowed(_)));
        // Refusals did not count against the quota: 61 passed.
        assert_eq!(l.lock().get("s").map(|e| e.used), Some(61));
    }

    #[test]
    fn the_quota_starts_from_the_grants_count_and_rolls_over_monthly() {
        let l = MemoryLimiter::default();
        let mut t = SECOND_US;
        let mut step = || {
            t += SECOND_US;
            t
        };
        // 3 a month, 1 already committed by the control plane: 2 more pass.
        let lim = limits("s", 1_000, 3, 1);
        assert!(matches!(l.check_at(&lim, MARCH, step(), 0), Verdict::Allowed(_)));
        assert!(matches!(l.check_at(&lim, MARCH, step(), 0), Verdict::Allowed(_)));
        let march_end = Month { year: 2025, month: 4 }.start_unix_ms() - 1500;
        assert_eq!(l.check_at(&lim, MARCH, step(), march_end), Verdict::QuotaExceeded { retry_after_secs: 2 });
        // A newer count from the control plane never lowers the counter.
        assert!(matches!(l.check_at(&limits("s", 1_000, 3, 0), MARCH, step(), 0), Verdict::QuotaExceeded { .. }));
        // A refund gives one back.
        l.refund(&lim, MARCH);
        assert!(matches!(l.check_at(&lim, MARCH, step(), 0), Verdict::Allowed(_)));
        // April starts from nothing (the grant's count is March's, so its base is 0).
        let april = limits("s", 1_000, 3, 0);
        for _ in 0..3 {
            assert!(matches!(l.check_at(&april, APRIL, step(), 0), Verdict::Allowed(_)));
        }
        assert!(matches!(l.check_at(&april, APRIL, step(), 0), Verdict::QuotaExceeded { .. }));
    }

    #[test]
    fn subscriptions_are_counted_apart() {
        let l = MemoryLimiter::default();
        assert!(matches!(l.check_at(&limits("a", 1, 10, 0), MARCH, SECOND_US, 0), Verdict::Allowed(_)));
        assert!(matches!(l.check_at(&limits("a", 1, 10, 0), MARCH, SECOND_US, 0), Verdict::RateLimited { .. }));
        assert!(matches!(l.check_at(&limits("b", 1, 10, 0), MARCH, SECOND_US, 0), Verdict::Allowed(_)));
    }

    #[test]
    fn eviction_keeps_callers_being_limited() {
        let mut map = HashMap::new();
        let now = 100 * 3600 * SECOND_US;
        map.insert("old-month".into(), Entry { tat: 0, month: MARCH, used: 5, last: now });
        map.insert("idle".into(), Entry { tat: 0, month: APRIL, used: 5, last: 0 });
        map.insert("limited".into(), Entry { tat: now + SECOND_US, month: APRIL, used: 5, last: now });
        map.insert("recent".into(), Entry { tat: now - 1, month: APRIL, used: 5, last: now - 1 });
        evict(&mut map, APRIL, now);
        let mut left: Vec<&str> = map.keys().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["limited", "recent"]);
    }
}
