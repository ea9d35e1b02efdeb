//! Per-user quotas, set by the operator: how many APIs, replicas and how much instance
//! memory one user may hold, how many versions an API keeps, and how many executes a user
//! may start a minute; and the rule that only a verified account may publish, deploy or
//! create keys. Over a standing quota the answer is 403 `quota` naming the limit; over the
//! execute rate it is 429 with `Retry-After`, since waiting is enough to pass.
use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait};
use souq_proto::{Kind, WireError};
use uuid::Uuid;

pub use crate::config::Quotas;
use crate::{
    auth::throttle::Throttle,
    clock::Clock,
    entity::users,
    error::{Error, Result},
};

/// Memory one instance is counted at when no node has said what it reserves: the
/// agents' default sandbox memory.
pub const ASSUMED_INSTANCE_MEMORY_MB: u64 = 256;

/// A 403 `quota` naming `limit`.
pub(crate) fn exceeded(limit: &str, message: impl Into<String>) -> Error {
    WireError::quota(limit, message).into()
}

/// Publishing, deploying and creating keys need a verified email address: a user who
/// holds resources or sells must be reachable, and a throwaway signup gets no more than
/// executes. `to` says what was refused, e.g. "deploying".
pub(crate) async fn require_verified(db: &impl ConnectionTrait, user: Uuid, to: &str) -> Result<()> {
    let verified = users::Entity::find_by_id(user).one(db).await?.is_some_and(|u| u.email_verified);
    if !verified {
        return Err(Error::kind(Kind::Forbidden, format!("verify your email address before {to}")));
    }
    Ok(())
}

/// Executes started per user per minute, counted before they run, in the database so
/// that every replica counts the same executes.
pub(crate) struct ExecuteRate {
    per_minute: u32,
    counts: Throttle,
    clock: Arc<dyn Clock>,
}

impl ExecuteRate {
    /// At most `per_minute` executes per user a minute, on `clock`.
    pub(crate) fn new(per_minute: u32, clock: Arc<dyn Clock>) -> Self {
        let minute = Duration::from_secs(60);
        // The execute that reaches the limit blocks the user for a minute; then the count
        // starts again. A user's row expires a minute after their last execute.
        ExecuteRate { per_minute, counts: Throttle::new("execute:user", per_minute, minute, minute, minute), clock }
    }

    /// Counts one execute of `user`: a 429 with `Retry-After` past the limit. If the count
    /// cannot be kept (the database failed), the execute is refused too.
    pub(crate) async fn admit(&self, db: &DatabaseConnection, user: Uuid) -> Result<()> {
        self.counts.attempt(db, &user.to_string(), self.clock.now()).await?.map_err(|secs| {
            let message = format!(
                "at most {} executes a minute per user (executes_per_minute); try again in {secs} s",
                self.per_minute
            );
            Error::Wire(WireError { limit: Some("executes_per_minute".into()), ..WireError::rate_limited(message, secs) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{auth::test_db::Replicas, clock::ManualClock};

    #[tokio::test]
    async fn executes_past_the_rate_wait_a_minute_and_each_user_counts_alone() {
        let t = Replicas::new().await;
        let db = &t.a;
        let clock = Arc::new(ManualClock::new());
        let rate = ExecuteRate::new(3, clock.clone());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            rate.admit(db, a).await.expect("within the rate");
        }
        let Err(Error::Wire(e)) = rate.admit(db, a).await else { panic!("the fourth passed") };
        assert_eq!((e.kind, e.limit.as_deref()), (Kind::RateLimited, Some("executes_per_minute")));
        assert!(e.retry_after.is_some_and(|s| (1..=60).contains(&s)), "{e:?}");
        rate.admit(db, b).await.expect("another user has their own count");
        clock.advance(Duration::from_secs(61));
        rate.admit(db, a).await.expect("a minute later the count starts again");
        t.close().await;
    }
}
