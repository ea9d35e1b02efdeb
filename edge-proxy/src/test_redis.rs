//! The Redis of tests: the one at `SOUQ_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), or none when it does not answer; and a Redis that is down.
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A connection to the test Redis, or `None` (and a note) when none answers.
pub(crate) async fn test_redis() -> Option<ConnectionManager> {
    let url = std::env::var("SOUQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url).ok()?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_number_of_retries(0);
    match ConnectionManager::new_with_config(client, config).await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("no Redis for this test ({e}); skipped");
            None
        }
    }
}

/// A connection to a port where nothing listens: Redis is down.
pub(crate) fn dead_redis() -> ConnectionManager {
    let client = redis::Client::open("redis://127.0.0.1:1").expect("url");
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)))
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config).expect("lazy")
}
