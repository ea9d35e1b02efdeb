//! Rate limits and monthly quotas per subscription (one consumer, one API), decided
//! before a call is sent: in Redis when one is configured, so every edge shares the
//! counts, else (and whenever Redis fails) in this process' memory.
pub mod gcra;
pub mod memory;
pub mod month;
pub mod redis;

use std::time::Duration;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{access::Grant, error::ApiError};
use month::Month;

/// `Retry-After` and `RateLimit-Reset` of a plan that allows no calls a minute.
const NO_RATE_RETRY_SECS: u64 = 60;

/// The limits of one call, from its grant, for this month.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Whose counters: the subscription.
    pub subscription_id: &'a str,
    /// Calls a minute (also the burst); 0 allows none.
    pub per_minute: u32,
    /// Calls a month; 0 allows none.
    pub monthly_quota: u64,
    /// Calls the control plane had committed this month; counters never fall below it.
    pub used_base: u64,
}

impl<'a> Limits<'a> {
    /// The limits of `grant` in `month`: the grant's count applies only to its own month.
    pub fn of(grant: &'a Grant, month: &str) -> Self {
        Limits {
            subscription_id: &grant.subscription_id,
            per_minute: grant.rate_limit_per_minute,
            monthly_quota: grant.monthly_quota,
            used_base: if grant.month == month { grant.used_this_month } else { 0 },
        }
    }
}

/// The `RateLimit-*` headers of a limited call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// `RateLimit-Limit`: the plan's calls a minute.
    pub limit: u64,
    /// `RateLimit-Remaining`: calls that would pass right now.
    pub remaining: u64,
    /// `RateLimit-Reset`: seconds until the whole burst is back.
    pub reset_secs: u64,
}

impl RateHeaders {
    /// Adds the headers to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("ratelimit-reset", HeaderValue::from(self.reset_secs));
    }
}

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The call passes and was counted against the quota.
    Allowed(RateHeaders),
    /// Over the rate: nothing was counted.
    RateLimited {
        /// The headers, with nothing remaining.
        headers: RateHeaders,
        /// Whole seconds until the next call would pass; at least 1.
        retry_after_secs: u64,
    },
    /// The month's quota is used up: nothing was counted.
    QuotaExceeded {
        /// Whole seconds until the next month (UTC); at least 1.
        retry_after_secs: u64,
    },
}

impl Verdict {
    /// From a GCRA decision; `per_minute` is the plan's rate.
    pub fn of_gcra(d: gcra::Decision, per_minute: u32) -> Self {
        let limit = u64::from(per_minute);
        match d {
            gcra::Decision::Allow { remaining, reset_us, .. } => {
                Verdict::Allowed(RateHeaders { limit, remaining, reset_secs: gcra::ceil_secs(reset_us) })
            }
            gcra::Decision::Deny { retry_after_us, reset_us } => Verdict::RateLimited {
                headers: RateHeaders { limit, remaining: 0, reset_secs: gcra::ceil_secs(reset_us).max(1) },
                retry_after_secs: gcra::retry_after_secs(retry_after_us),
            },
        }
    }

    /// The refusal of a plan that allows no calls a minute.
    pub fn no_rate() -> Self {
        Verdict::RateLimited {
            headers: RateHeaders { limit: 0, remaining: 0, reset_secs: NO_RATE_RETRY_SECS },
            retry_after_secs: NO_RATE_RETRY_SECS,
        }
    }

    /// The 429 answer of a refusal; `None` when the call passes.
    pub fn refusal(&self) -> Option<Response> {
        match *self {
            Verdict::Allowed(_) => None,
            Verdict::RateLimited { headers, retry_after_secs } => {
                let err = ApiError {
                    retry_after: Some(retry_after_secs),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate-limited",
                        format!("over this plan's {} calls a minute; retry in {retry_after_secs} s", headers.limit),
                    )
                };
                let mut resp = err.into_response();
                headers.apply(resp.headers_mut());
                Some(resp)
            }
            Verdict::QuotaExceeded { retry_after_secs } => Some(
                ApiError {
                    retry_after: Some(retry_after_secs),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "quota-exceeded",
                        "this plan's monthly quota is used up; it renews at the start of next month (UTC), or choose a larger plan",
                    )
                }
                .into_response(),
            ),
        }
    }
}

/// The limiter: Redis when configured and reachable, memory otherwise.
pub struct Limiter {
    memory: memory::MemoryLimiter,
    redis: Option<std::sync::Arc<redis::RedisLimiter>>,
}

impl Limiter {
    /// A limiter in memory only.
    pub fn in_memory() -> Self {
        Limiter { memory: memory::MemoryLimiter::default(), redis: None }
    }

    /// A limiter in Redis, falling back to memory while Redis fails.
    pub fn with_redis(conn: ::redis::aio::ConnectionManager, timeout: Duration) -> Self {
        Limiter {
            memory: memory::MemoryLimiter::default(),
            redis: Some(std::sync::Arc::new(redis::RedisLimiter::new(conn, timeout))),
        }
    }

    /// Decides one call now, and counts it when it passes.
    pub async fn check(&self, limits: &Limits<'_>, now_unix_ms: i64) -> Verdict {
        if limits.monthly_quota == 0 {
            return Verdict::QuotaExceeded { retry_after_secs: month::secs_until_next_month(now_unix_ms) };
        }
        if limits.per_minute == 0 {
            return Verdict::no_rate();
        }
        let month = Month::of_unix_ms(now_unix_ms);
        if let Some(r) = &self.redis
            && let Some(v) = r.check(limits, month, now_unix_ms).await
        {
            return v;
        }
        self.memory.check(limits, month, now_unix_ms)
    }

    /// Gives back the quota of a call that never reached a handler.
    pub async fn refund(&self, limits: &Limits<'_>, now_unix_ms: i64) {
        let month = Month::of_unix_ms(now_unix_ms);
        if let Some(r) = &self.redis
            && r.refund(limits, month).await
        {
            return;
        }
        self.memory.refund(limits, month);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(month: &str) -> Grant {
        Grant {
            subscription_id: "s".into(),
            user_id: "u".into(),
            api_id: "a".into(),
            plan_id: "p".into(),
            rate_limit_per_minute: 60,
            monthly_quota: 100,
            used_this_month: 40,
            month: month.into(),
        }
    }

    #[test]
    fn the_grants_count_applies_only_to_its_month() {
        let g = grant("2025-03");
        assert_eq!(Limits::of(&g, "2025-03").used_base, 40);
        assert_eq!(Limits::of(&g, "2025-04").used_base, 0);
    }

    #[tokio::test]
    async fn refusals_are_429_with_the_right_type_and_headers() {
        let d = gcra::check(0, 0, gcra::Rate { per_minute: 1 });
        let gcra::Decision::Allow { tat, .. } = d else { panic!("refused") };
        let v = Verdict::of_gcra(gcra::check(tat, 0, gcra::Rate { per_minute: 1 }), 1);
        let resp = v.refusal().expect("refused");
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(get("retry-after").as_deref(), Some("60"));
        assert_eq!(get("ratelimit-limit").as_deref(), Some("1"));
        assert_eq!(get("ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(get("ratelimit-reset").as_deref(), Some("60"));
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.expect("body");
        let p: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(p["type"], "urn:souq:problem:rate-limited");

        let resp = Verdict::QuotaExceeded { retry_after_secs: 77 }.refusal().expect("refused");
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("77"));
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.expect("body");
        let p: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(p["type"], "urn:souq:problem:quota-exceeded");
        assert!(Verdict::Allowed(RateHeaders { limit: 1, remaining: 0, reset_secs: 1 }).refusal().is_none());
    }

    #[tokio::test]
    async fn zero_limits_allow_nothing() {
        let limiter = Limiter::in_memory();
        let mut g = grant("2025-03");
        g.monthly_quota = 0;
        assert!(matches!(limiter.check(&Limits::of(&g, "x"), 0).await, Verdict::QuotaExceeded { .. }));
        g.monthly_quota = 5;
        g.rate_limit_per_minute = 0;
        assert_eq!(limiter.check(&Limits::of(&g, "x"), 0).await, Verdict::no_rate());
    }
}
