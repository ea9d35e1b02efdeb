//! The Redis limiter: one Lua script (`check.lua`, run with EVALSHA and loaded again on
//! NOSCRIPT) decides the rate and counts the quota atomically, so every edge shares the
//! counts. Checks that arrive while one is in flight go together in the next script
//! call, in order: one round trip and one script run for a whole batch.
//!
//! When Redis fails, a check answers `None` and Redis is left alone for a short while;
//! the caller falls back to memory. The switch is logged once each way. (A batch names
//! many subscriptions' keys, so this needs one Redis, not a Redis Cluster.)
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use redis::{Script, aio::ConnectionManager};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Limits, RateHeaders, Verdict, gcra, month::Month};

/// How long Redis is left alone after a failure before it is tried again.
const COOL_DOWN_MS: i64 = 1_000;
/// How long past the month's end a quota counter is kept (then Redis expires it).
const QUOTA_TTL_MARGIN_SECS: u64 = 86_400;
/// Most checks in one script call.
const MAX_BATCH: usize = 128;

/// One check waiting for the next script call.
struct Check {
    keys: [String; 2],
    args: [u64; 5],
    reply: oneshot::Sender<Option<[i64; 3]>>,
}

/// Rate and quota state in Redis.
pub struct RedisLimiter {
    conn: ConnectionManager,
    check: Script,
    refund: Script,
    /// Longest one script call may take before memory decides instead.
    timeout: Duration,
    /// Checks waiting for the next script call.
    queue: Mutex<Vec<Check>>,
    /// Whether a task is sending batches.
    sending: AtomicBool,
    /// Unix ms before which Redis is not tried (after a failure).
    skip_until_ms: AtomicI64,
    /// Whether the last attempt failed: the fallback is logged once, and so is recovery.
    degraded: AtomicBool,
}

/// `souq:rl:{<subscription>}`: the rate state.
fn rate_key(subscription_id: &str) -> String {
    format!("souq:rl:{{{subscription_id}}}")
}

/// `souq:quota:{<subscription>}:<YYYY-MM>`: the month's count.
fn quota_key(subscription_id: &str, month: Month) -> String {
    format!("souq:quota:{{{subscription_id}}}:{}", month.label())
}

/// The verdict of the script's answer `{code, a, b}` for one call.
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
    /// A limiter on `conn`; each script call waits at most `timeout`.
    pub fn new(conn: ConnectionManager, timeout: Duration) -> Self {
        RedisLimiter {
            conn,
            check: Script::new(include_str!("check.lua")),
            refund: Script::new(
                "local n = tonumber(redis.call('GET', KEYS[1]) or '0') if n > 0 then redis.call('DECR', KEYS[1]) end return 0",
            ),
            timeout,
            queue: Mutex::default(),
            sending: AtomicBool::new(false),
            skip_until_ms: AtomicI64::new(0),
            degraded: AtomicBool::new(false),
        }
    }

    /// Decides one call, or `None` when Redis cannot (the caller asks memory).
    pub async fn check(self: &Arc<Self>, limits: &Limits<'_>, month: Month, now_unix_ms: i64) -> Option<Verdict> {
        if now_unix_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        let rate = gcra::Rate { per_minute: u64::from(limits.per_minute) };
        let ttl = super::month::secs_until_next_month(now_unix_ms) + QUOTA_TTL_MARGIN_SECS;
        let (tx, rx) = oneshot::channel();
        let check = Check {
            keys: [rate_key(limits.subscription_id), quota_key(limits.subscription_id, month)],
            args: [rate.interval_us(), rate.burst(), limits.monthly_quota, limits.used_base, ttl],
            reply: tx,
        };
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(check);
        if !self.sending.swap(true, Ordering::AcqRel) {
            // A task of its own: a caller that goes away must not strand the others.
            tokio::spawn(self.clone().send_batches());
        }
        let reply = rx.await.ok().flatten()?;
        let v = verdict_of(&reply, limits, now_unix_ms);
        if v.is_none() {
            warn!(?reply, "the limiter script answered something unexpected");
        }
        v
    }

    /// Sends the queued checks, a batch per script call, until none waits.
    async fn send_batches(self: Arc<Self>) {
        loop {
            let batch: Vec<Check> = {
                let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                self.sending.store(false, Ordering::Release);
                // A check queued between the take and the store would wait forever: look
                // again, unless another task took over meanwhile.
                let waiting = !self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty();
                if !waiting || self.sending.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            }
            let mut call = self.check.prepare_invoke();
            for c in &batch {
                call.key(&c.keys[0]).key(&c.keys[1]);
                for a in c.args {
                    call.arg(a);
                }
            }
            let mut conn = self.conn.clone();
            let reply = tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn)).await;
            let now = super::month::unix_ms_now();
            let answers = match reply {
                Ok(Ok(r)) if r.len() == 3 * batch.len() => {
                    self.recovered();
                    Some(r)
                }
                Ok(Ok(r)) => {
                    warn!(
                        got = r.len(),
                        want = 3 * batch.len(),
                        "the limiter script answered the wrong number of values"
                    );
                    None
                }
                Ok(Err(e)) => {
                    self.failed(now, &e.to_string());
                    None
                }
                Err(_) => {
                    self.failed(now, "timed out");
                    None
                }
            };
            for (i, c) in batch.into_iter().enumerate() {
                let answer = answers.as_ref().and_then(|a| <[i64; 3]>::try_from(a.get(3 * i..3 * i + 3)?).ok());
                let _ = c.reply.send(answer);
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
    fn keys_name_the_subscription_and_month() {
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
