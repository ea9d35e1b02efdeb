//! GCRA (the generic cell rate algorithm) for per-minute rate limits, and the arithmetic
//! of the headers that report it. Pure: times are microseconds on any clock.
//!
//! A plan of `r` calls a minute emits one call every `T = 60 s / r`, and lets a whole
//! minute's worth (`burst = r`) come at once. The state is one number, the theoretical
//! arrival time (TAT); the Redis script (`check.lua`) does the same arithmetic.

/// Microseconds in a second.
pub const SECOND_US: u64 = 1_000_000;
/// Microseconds in a minute.
pub const MINUTE_US: u64 = 60 * SECOND_US;

/// A rate of `per_minute` calls a minute, with a burst of as many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls a minute; at least 1.
    pub per_minute: u64,
}

impl Rate {
    /// The emission interval `T` in microseconds: 60 s / rate (at least 1 µs).
    pub fn interval_us(self) -> u64 {
        (MINUTE_US / self.per_minute.max(1)).max(1)
    }

    /// How many calls may come at once: a minute's worth.
    pub fn burst(self) -> u64 {
        self.per_minute.max(1)
    }
}

/// What the algorithm decided for one call at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The call passes; store `tat`.
    Allow {
        /// The new theoretical arrival time.
        tat: u64,
        /// Calls that would still pass at the same instant.
        remaining: u64,
        /// Microseconds until the whole burst is available again.
        reset_us: u64,
    },
    /// The call is refused; the stored TAT is unchanged.
    Deny {
        /// Microseconds until the next call would pass.
        retry_after_us: u64,
        /// Microseconds until the whole burst is available again.
        reset_us: u64,
    },
}

/// Decides one call at `now` against the stored `tat` (0 when none).
pub fn check(tat: u64, now: u64, rate: Rate) -> Decision {
    let (t, burst) = (rate.interval_us(), rate.burst());
    let tat = tat.max(now);
    let new_tat = tat.saturating_add(t);
    // The call passes when the new TAT stays within a burst of now: `new_tat - burst·T <=
    // now`, written without a subtraction that could go below zero near the clock's origin.
    let limit_at = now.saturating_add(burst.saturating_mul(t));
    if new_tat > limit_at {
        return Decision::Deny { retry_after_us: new_tat - limit_at, reset_us: tat - now };
    }
    Decision::Allow { tat: new_tat, remaining: (limit_at - new_tat) / t, reset_us: new_tat - now }
}

/// Whole seconds, rounded up, that cover `us` microseconds: what `Retry-After` and
/// `RateLimit-Reset` carry. Waiting that long is always enough.
pub fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(SECOND_US)
}

/// `Retry-After` of a refusal: whole seconds, at least 1.
pub fn retry_after_secs(retry_after_us: u64) -> u64 {
    ceil_secs(retry_after_us).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_MIN_60: Rate = Rate { per_minute: 60 };

    #[test]
    fn interval_and_burst() {
        assert_eq!(PER_MIN_60.interval_us(), SECOND_US);
        assert_eq!(Rate { per_minute: 600 }.interval_us(), 100_000);
        assert_eq!(Rate { per_minute: 7 }.burst(), 7);
        assert_eq!(Rate { per_minute: 100_000_000 }.interval_us(), 1);
    }

    #[test]
    fn a_full_minute_may_come_at_once_then_one_per_interval() {
        let now = 1_000 * SECOND_US;
        let mut tat = 0;
        for i in 0..60 {
            match check(tat, now, PER_MIN_60) {
                Decision::Allow { tat: t, remaining, reset_us } => {
                    assert_eq!(remaining, 59 - i, "call {i}");
                    assert_eq!(reset_us, (i + 1) * SECOND_US);
                    tat = t;
                }
                d => panic!("call {i} refused: {d:?}"),
            }
        }
        // The 61st at the same instant waits exactly one interval.
        assert_eq!(check(tat, now, PER_MIN_60), Decision::Deny { retry_after_us: SECOND_US, reset_us: 60 * SECOND_US });
        // Half an interval later: half an interval left, and Retry-After rounds up to 1 s.
        let d = check(tat, now + SECOND_US / 2, PER_MIN_60);
        assert_eq!(d, Decision::Deny { retry_after_us: SECOND_US / 2, reset_us: 60 * SECOND_US - SECOND_US / 2 });
        // Once Retry-After has passed, the call passes.
        assert!(matches!(check(tat, now + SECOND_US, PER_MIN_60), Decision::Allow { remaining: 0, .. }));
    }

    #[test]
    fn an_idle_caller_gets_the_whole_burst_back() {
        let now = 5 * MINUTE_US;
        let Decision::Allow { tat, .. } = check(0, now, PER_MIN_60) else { panic!("refused") };
        let later = now + 10 * MINUTE_US;
        assert_eq!(
            check(tat, later, PER_MIN_60),
            Decision::Allow { tat: later + SECOND_US, remaining: 59, reset_us: SECOND_US }
        );
    }

    #[test]
    fn the_clocks_origin_is_no_special_case() {
        // A clock that starts at 0 (a process' monotonic clock) gives the same answers.
        assert_eq!(check(0, 0, PER_MIN_60), Decision::Allow { tat: SECOND_US, remaining: 59, reset_us: SECOND_US });
        assert_eq!(check(0, 5, PER_MIN_60), Decision::Allow { tat: 5 + SECOND_US, remaining: 59, reset_us: SECOND_US });
    }

    #[test]
    fn slow_plans_wait_whole_intervals() {
        // 2 a minute: 30 s apart, burst 2.
        let r = Rate { per_minute: 2 };
        let now = 100 * MINUTE_US;
        let Decision::Allow { tat, .. } = check(0, now, r) else { panic!("1") };
        let Decision::Allow { tat, remaining: 0, .. } = check(tat, now, r) else { panic!("2") };
        let Decision::Deny { retry_after_us, .. } = check(tat, now + 1, r) else { panic!("3 passed") };
        assert_eq!(retry_after_us, 30 * SECOND_US - 1);
        assert_eq!(retry_after_secs(retry_after_us), 30);
    }

    #[test]
    fn header_seconds_round_up_and_retry_after_is_at_least_one() {
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(SECOND_US), 1);
        assert_eq!(ceil_secs(SECOND_US + 1), 2);
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(2_500_000), 3);
    }
}
