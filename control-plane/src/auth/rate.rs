//! Rate limits on anonymous writes (signup, forgotten passwords): a fixed window per
//! client address and one shared by every client, each refusing with the seconds to wait.
//! The counts are in the database ([`crate::auth::throttle`]), shared by every replica.
use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use super::throttle::{self, Throttle, Verdict};
pub use crate::config::RateConfig;
use crate::error::Result;

/// A per-client and a global fixed-window limit.
#[derive(Debug)]
pub struct RateLimit {
    client: Throttle,
    global: Throttle,
}

/// The global limit's one key.
const ALL: &str = "";

impl RateLimit {
    /// Limits on `what` (`signup`, `forgot`: the namespace of its keys) as `cfg` says. A
    /// window whose limit is reached stays shut until it ends.
    pub fn new(what: &str, cfg: RateConfig) -> Self {
        let w = cfg.window;
        RateLimit {
            client: Throttle::new(&format!("{what}:client"), cfg.per_client, w, w, w),
            global: Throttle::new(&format!("{what}:all"), cfg.global, w, w, w),
        }
    }

    /// Counts one request from `client`, in one transaction: `Ok(Err(seconds))` when it
    /// or everybody is over, and then nothing is counted.
    pub async fn admit(&self, db: &DatabaseConnection, client: &str, now: DateTime<Utc>) -> Result<Verdict> {
        let client = if client.is_empty() { "unknown" } else { client };
        throttle::attempt_all(db, &[(&self.client, self.client.key(client)), (&self.global, self.global.key(ALL))], now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::test_db::Replicas;

    #[tokio::test]
    async fn per_client_then_global_then_a_fresh_window() {
        let t = Replicas::new().await;
        let db = &t.a;
        let rl = RateLimit::new("signup", RateConfig { per_client: 2, global: 3, window: Duration::from_secs(60) });
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(rl.admit(db, "a", now).await.unwrap(), Ok(()));
        assert_eq!(rl.admit(db, "a", now).await.unwrap(), Ok(()));
        assert_eq!(rl.admit(db, "a", now).await.unwrap(), Err(60), "a is over its own limit");
        assert_eq!(rl.admit(db, "b", now).await.unwrap(), Ok(()));
        assert_eq!(rl.admit(db, "c", now).await.unwrap(), Err(60), "everybody is over");
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(rl.admit(db, "a", later).await.unwrap(), Ok(()), "a new window");
        assert_eq!(rl.admit(db, "c", later).await.unwrap(), Ok(()), "a new window");
        // Another limit over the same table counts apart.
        let other = RateLimit::new("forgot", RateConfig { per_client: 1, global: 1, window: Duration::from_secs(60) });
        assert_eq!(other.admit(db, "a", later).await.unwrap(), Ok(()));
        t.close().await;
    }
}
