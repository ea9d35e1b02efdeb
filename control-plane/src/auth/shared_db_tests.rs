//! Throttles shared by replicas: two connection pools over one database stand for two
//! control-plane replicas. Runs on SQLite, and on PostgreSQL when `SOUQ_TEST_PG_URL` is
//! set, as every control-plane database test does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{EntityTrait, PaginatorTrait};
use tokio::task::JoinSet;

use super::{
    lockout::{LoginThrottle, PAIR_LIMIT},
    test_db::Replicas,
    throttle::{self, Throttle},
};
use crate::entity::throttles;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// Attempts made at once on one key, half through each pool.
const CONCURRENT: usize = 64;

/// `CONCURRENT` attempts on one key at once, alternating pools; how many were admitted.
async fn race(r: &Replicas, th: &Arc<Throttle>, key: &str) -> usize {
    let mut set = JoinSet::new();
    for i in 0..CONCURRENT {
        let db = if i % 2 == 0 { r.a.clone() } else { r.b.clone() };
        let (th, key) = (th.clone(), key.to_owned());
        set.spawn(async move { th.attempt(&db, &key, t0()).await.expect("counting failed") });
    }
    let mut admitted = 0;
    while let Some(done) = set.join_next().await {
        if done.unwrap().is_ok() {
            admitted += 1;
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_attempts_from_two_pools_lose_no_count() {
    let r = Replicas::new().await;
    // Under the limit: every attempt is counted, none lost.
    let roomy = Arc::new(Throttle::new("test:roomy", 10_000, minutes(15), minutes(1), minutes(15)));
    assert_eq!(race(&r, &roomy, "k").await, CONCURRENT);
    let row = throttles::Entity::find_by_id(roomy.key("k").stored().to_owned()).one(&r.a).await.unwrap().unwrap();
    assert_eq!(row.failures, i32::try_from(CONCURRENT).unwrap(), "every attempt counted exactly once");
    // At the limit: exactly the limit gets through, whichever replica each went to.
    let tight = Arc::new(Throttle::new("test:tight", 5, minutes(15), minutes(1), minutes(15)));
    assert_eq!(race(&r, &tight, "k").await, 5);
    let row = throttles::Entity::find_by_id(tight.key("k").stored().to_owned()).one(&r.b).await.unwrap().unwrap();
    assert_eq!(row.failures, 5, "the refused attempts counted nothing");
    r.close().await;
}

#[tokio::test]
async fn guesses_split_across_two_replicas_block_the_pair() {
    let r = Replicas::new().await;
    let (one, two) = (LoginThrottle::default(), LoginThrottle::default());
    let now = t0();
    for i in 0..PAIR_LIMIT {
        let (th, db) = if i % 2 == 0 { (&one, &r.a) } else { (&two, &r.b) };
        assert_eq!(th.attempt(db, "victim@x.y", "10.0.0.66", now).await.unwrap(), Ok(()));
    }
    assert!(one.attempt(&r.a, "victim@x.y", "10.0.0.66", now).await.unwrap().is_err(), "blocked on replica one");
    assert!(two.attempt(&r.b, "victim@x.y", "10.0.0.66", now).await.unwrap().is_err(), "and on replica two");
    // A reset on one replica lifts the block for both.
    two.lift(&r.b, "victim@x.y").await.unwrap();
    assert_eq!(one.attempt(&r.a, "victim@x.y", "10.0.0.66", now).await.unwrap(), Ok(()));
    r.close().await;
}

#[tokio::test]
async fn expired_rows_are_pruned_and_live_ones_kept() {
    let r = Replicas::new().await;
    let short = Throttle::new("test:short", 2, minutes(1), minutes(1), minutes(1));
    let long = Throttle::new("test:long", 2, minutes(15), minutes(15), minutes(15));
    let now = t0();
    for i in 0..10 {
        short.attempt(&r.a, &format!("k{i}"), now).await.unwrap().unwrap();
    }
    long.attempt(&r.a, "k", now).await.unwrap().unwrap();
    long.attempt(&r.a, "k", now).await.unwrap().unwrap();
    assert_eq!(throttle::prune(&r.b, now).await.unwrap(), 0, "nothing expired yet");
    let later = now + chrono::Duration::minutes(2);
    assert_eq!(throttle::prune(&r.b, later).await.unwrap(), 10, "the short windows are over");
    assert_eq!(throttles::Entity::find().count(&r.a).await.unwrap(), 1);
    assert!(long.attempt(&r.a, "k", later).await.unwrap().is_err(), "the blocked key is still blocked");
    r.close().await;
}
