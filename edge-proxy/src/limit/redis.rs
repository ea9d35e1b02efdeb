//! The Redis limiter: one Lua script (`check.lua`, run with EVALSHA and loaded again on
//! NOSCRIPT) decides the rate and counts the quota atomically, so every edge shares the
//! counts. When Redis fails, it answers `None` and stays out of the way for a short
//! while, and the caller falls back to memory; the switch is logged once each way.
use std::{
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
    time::Duration,
};

use redis::{Script, aio::ConnectionManager};
use tracing::{info, warn};

use super::{Limits, RateHeaders, Verdict, gcra, month::Month};

/// How long Redis is left alone after a failure before it is tried again.
const COOL_DOWN_MS: i64 = 1_000;
/// How long past the month's end a quota counter is kept (then Redis expires it).
const QUOTA_TTL_MARGIN_SECS: u64 = 86_400;

/// Rate and quota state in Redis.
pub struct RedisLimiter {
    conn: ConnectionManager,
    check: Script,
    refund: Script,
    /// Longest one decision may take before memory decides instead.
    timeout: Duration,
    /// Unix ms before which Redis is not tried (after a failure).
    skip_until_ms: AtomicI64,
    /// Whether the last attempt failed: the fallback is logged once, and so is recovery.
    degraded: AtomicBool,
}

/// `souq:rl:{<subscription>}`: the rate state. The braces keep both keys of a
/// subscription on one Redis Cluster slot.
fn rate_key(subscription_id: &str) -> String {
    format!("souq:rl:{{{subscription_id}}}")
}

/// `souq:quota:{<subscription>}:<YYYY-MM>`: the month's count.
fn quota_key(subscription_id: &str, month: Month) -> String {
    format!("souq:quota:{{{subscription_id}}}:{}", month.label())
}

/// The verdict of the script's answer `{code, a, b}`.
fn verdict_of(reply: &[i64], limits: &Limits<'_>, now_unix_ms: i64) -> Option<Verdict> {
    let as_u64 = |i: usize| reply.get(i).map(|v| u64::try_from(*v).unwrap_or(0));
    let limit = u64::from(limits.per_minute);
    match reply.first()? {
        1 => Some(Verdict::Allowed(RateHeaders {
            limit,
            remaining: as_u64(1)?,
            reset_secs: gcra::ceil_secs(as_u64(2)?),
        })),
        0 => Some(Verdict::RateLimited {
            headers: RateHeaders { limit, remaining: 0, reset_secs: gcra::ceil_secs(as_u64(2)?).max(1) },
            retry_after_secs: gcra::retry_after_secs(as_u64(1)?),
        }),
        2 => Some(Verdict::QuotaExceeded { retry_after_secs: super::month::secs_until_next_month(now_unix_ms) }),
        _ => None,
    }
}

impl RedisLimiter {
    /// A limiter on `conn`; each decision waits at most `timeout`.
    pub fn new(conn: ConnectionManager, timeout: Duration) -> Self {
        RedisLimiter {
            conn,
            check: Script::new(include_str!("check.lua")),
            refund: Script::new(
                "local n = tonumber(redis.call('GET', KEYS[1]) or '0') if n > 0 then redis.call('DECR', KEYS[1]) end return 0",
            ),
            timeout,
            skip_until_ms: AtomicI64::new(0),
            degraded: AtomicBool::new(false),
        }
    }

    /// Decides one call, or `None` when Redis cannot (the caller asks memory).
    pub async fn check(&self, limits: &Limits<'_>, month: Month, now_unix_ms: i64) -> Option<Verdict> {
        if now_unix_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let rate = gcra::Rate { per_minute: u64::from(limits.per_minute) };
        let ttl = super::month::secs_until_next_month(now_unix_ms) + QUOTA_TTL_MARGIN_SECS;
        let mut call = self.check.prepare_invoke();
        call.key(rate_key(limits.subscription_id))
            .key(quota_key(limits.subscription_id, month))
            .arg(rate.interval_us())
            .arg(rate.burst())
            .arg(limits.monthly_quota)
            .arg(limits.used_base)
            .arg(ttl);
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn)).await;
        match reply {
            Ok(Ok(reply)) => {
                self.recovered();
                let v = verdict_of(&reply, limits, now_unix_ms);
                if v.is_none() {
                    warn!(?reply, "the limiter script answered something unexpected");
                }
                v
            }
            Ok(Err(e)) => {
                self.failed(now_unix_ms, &e.to_string());
                None
            }
            Err(_) => {
                self.failed(now_unix_ms, "timed out");
                None
            }
        }
    }

    /// Gives back one call of the month's count; false when Redis could not.
    pub async fn refund(&self, limits: &Limits<'_>, month: Month) -> bool {
        let mut call = self.refund.prepare_invoke();
        call.key(quota_key(limits.subscription_id, month));
        let mut conn = self.conn.clone();
        matches!(tokio::time::timeout(self.timeout, call.invoke_async::<i64>(&mut conn)).await, Ok(Ok(_)))
    }

    fn failed(&self, now_unix_ms: i64, why: &str) {
        self.skip_until_ms.store(now_unix_ms + COOL_DOWN_MS, Ordering::Relaxed);
        if !self.degraded.swap(true, Ordering::Relaxed) {
            warn!(error = why, "Redis failed; rate limits and quotas are kept in memory until it answers again");
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            info!("Redis answers again; rate limits and quotas are kept in Redis");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_cluster_slot_and_name_the_month() {
        assert_eq!(rate_key("s1"), "souq:rl:{s1}");
        assert_eq!(quota_key("s1", Month { year: 2025, month: 7 }), "souq:quota:{s1}:2025-07");
    }

    #[test]
    fn script_answers_become_verdicts() {
        let l = Limits { subscription_id: "s", per_minute: 60, monthly_quota: 10, used_base: 0 };
        assert_eq!(
            verdict_of(&[1, 59, 1_000_000], &l, 0),
            Some(Verdict::Allowed(RateHeaders { limit: 60, remaining: 59, reset_secs: 1 }))
        );
        assert_eq!(
            verdict_of(&[0, 400_000, 60_000_000], &l, 0),
            Some(Verdict::RateLimited {
                headers: RateHeaders { limit: 60, remaining: 0, reset_secs: 60 },
                retry_after_secs: 1
            })
        );
        assert!(matches!(verdict_of(&[2, 10, 0], &l, 0), Some(Verdict::QuotaExceeded { .. })));
        assert_eq!(verdict_of(&[7], &l, 0), None);
        assert_eq!(verdict_of(&[], &l, 0), None);
    }
}
