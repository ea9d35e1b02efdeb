//! Rate limits on anonymous writes (signup, forgotten passwords): a fixed window per
//! client address and one shared by every client, each refusing with the seconds to wait.
use chrono::{DateTime, Utc};

use super::throttle::Throttle;
pub use crate::config::RateConfig;

/// A per-client and a global fixed-window limit.
#[derive(Debug)]
pub struct RateLimit {
    client: Throttle,
    global: Throttle,
}

/// The global limit's one key.
const ALL: &str = "";

impl RateLimit {
    /// Limits as `cfg` says. A window whose limit is reached stays shut until it ends.
    pub fn new(cfg: RateConfig) -> Self {
        let w = cfg.window;
        RateLimit { client: Throttle::new(cfg.per_client, w, w, w), global: Throttle::new(cfg.global, w, w, w) }
    }

    /// Counts one request from `client`: `Err(seconds)` when it or everybody is over.
    pub fn admit(&self, client: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let client = if client.is_empty() { "unknown" } else { client };
        self.client.attempt(client, now)?;
        self.global.attempt(ALL, now).inspect_err(|_| self.client.undo(client))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn per_client_then_global_then_a_fresh_window() {
        let rl = RateLimit::new(RateConfig { per_client: 2, global: 3, window: Duration::from_secs(60) });
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert!(rl.admit("a", now).is_ok());
        assert!(rl.admit("a", now).is_ok());
        assert_eq!(rl.admit("a", now), Err(60), "a is over its own limit");
        assert!(rl.admit("b", now).is_ok());
        assert_eq!(rl.admit("c", now), Err(60), "everybody is over");
        let later = now + chrono::Duration::seconds(61);
        assert!(rl.admit("a", later).is_ok() && rl.admit("c", later).is_ok(), "a new window");
    }
}
