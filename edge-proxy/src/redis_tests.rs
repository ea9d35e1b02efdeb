//! Tests of the Redis limiter and metering stream against a real Redis ([`test_redis`]).
//! Each test uses keys of its own and removes them; when no Redis answers, the tests say
//! so and pass.
use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;

use crate::{
    limit::{
        Limiter, Limits, Verdict,
        month::{Month, unix_ms_now},
        redis::RedisLimiter,
    },
    meter::{Draft, Kind, Meter, Store},
    test_redis::{dead_redis, test_redis},
};

async fn del(conn: &ConnectionManager, keys: &[String]) {
    let mut c = conn.clone();
    let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn the_script_limits_the_rate_and_counts_the_quota() {
    let Some(conn) = test_redis().await else {
        return;
    };
    let sub = unique("test-sub");
    let now = unix_ms_now();
    let month = Month::of_unix_ms(now);
    let keys = [format!("souq:rl:{{{sub}}}"), format!("souq:quota:{{{sub}}}:{}", month.label())];
    let limiter = Arc::new(RedisLimiter::new(conn.clone(), Duration::from_secs(2)));
    // 3 a minute, 5 a month, 1 already committed.
    let l = Limits { subscription_id: &sub, per_minute: 3, monthly_quota: 5, used_base: 1 };
    let mut remaining = Vec::new();
    for _ in 0..3 {
        match limiter.check(&l, month, now).await {
            Some(Verdict::Allowed(h)) => remaining.push(h.remaining),
            v => panic!("refused: {v:?}"),
        }
    }
    assert_eq!(remaining, [2, 1, 0]);
    match limiter.check(&l, month, now).await {
        Some(Verdict::RateLimited { retry_after_secs, headers }) => {
            assert!((19..=20).contains(&retry_after_secs), "{retry_after_secs}");
            assert_eq!((headers.limit, headers.remaining), (3, 0));
        }
        v => panic!("not limited: {v:?}"),
    }
    let mut c = conn.clone();
    let used: u64 = redis::cmd("GET").arg(&keys[1]).query_async(&mut c).await.expect("count");
    assert_eq!(used, 4, "1 committed + 3 passed; the refusal counted nothing");
    let ttl: i64 = redis::cmd("TTL").arg(&keys[1]).query_async(&mut c).await.expect("ttl");
    assert!(ttl > 86_400, "the count outlives the month: {ttl}");

    // A script cache flushed under the edge (a Redis restart): loaded again on NOSCRIPT.
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut c).await.expect("flush");
    // (A new plan's rate starts from the old one's state; a fresh state here.)
    del(&conn, &keys[..1]).await;
    let roomy = Limits { per_minute: 1000, ..l };
    assert!(matches!(limiter.check(&roomy, month, now).await, Some(Verdict::Allowed(_))));
    // 5 used: the quota is gone; a refund gives one back.
    assert!(matches!(limiter.check(&roomy, month, now).await, Some(Verdict::QuotaExceeded { .. })));
    assert!(limiter.refund(&roomy, month).await);
    assert!(matches!(limiter.check(&roomy, month, now).await, Some(Verdict::Allowed(_))));
    // A newer count from the control plane past the edge's raises it.
    let ahead = Limits { used_base: 6, monthly_quota: 6, ..roomy };
    assert!(matches!(limiter.check(&ahead, month, now).await, Some(Verdict::QuotaExceeded { .. })));
    del(&conn, &keys).await;
}

#[tokio::test]
async fn concurrent_checks_in_batches_pass_exactly_the_burst() {
    let Some(conn) = test_redis().await else {
        return;
    };
    let sub = unique("test-sub");
    let now = unix_ms_now();
    let month = Month::of_unix_ms(now);
    let limiter = Arc::new(RedisLimiter::new(conn.clone(), Duration::from_secs(2)));
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let (limiter, sub) = (limiter.clone(), sub.clone());
        checks.spawn(async move {
            let l = Limits { subscription_id: &sub, per_minute: 100, monthly_quota: 1_000, used_base: 0 };
            limiter.check(&l, month, now).await
        });
    }
    let mut passed = 0;
    while let Some(v) = checks.join_next().await {
        match v.expect("join") {
            Some(Verdict::Allowed(_)) => passed += 1,
            Some(Verdict::RateLimited { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(passed, 100, "a minute's worth, no more");
    let keys = [format!("souq:rl:{{{sub}}}"), format!("souq:quota:{{{sub}}}:{}", month.label())];
    let mut c = conn.clone();
    let used: u64 = redis::cmd("GET").arg(&keys[1]).query_async(&mut c).await.expect("count");
    assert_eq!(used, 100);
    del(&conn, &keys).await;
}

#[tokio::test]
async fn when_redis_is_down_memory_decides() {
    let limiter = Limiter::with_redis(dead_redis(), Duration::from_millis(300));
    let l = Limits { subscription_id: "s", per_minute: 1, monthly_quota: 10, used_base: 0 };
    let started = std::time::Instant::now();
    assert!(matches!(limiter.check(&l, unix_ms_now()).await, Verdict::Allowed(_)));
    assert!(matches!(limiter.check(&l, unix_ms_now()).await, Verdict::RateLimited { .. }));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

fn draft(i: u64) -> Draft {
    Draft {
        api_id: "a".into(),
        user_id: "u".into(),
        key_id: String::new(),
        subscription_id: String::new(),
        kind: Kind::Call,
        bytes_in: i,
        started: std::time::Instant::now(),
        ts_ms: 1,
    }
}

fn stream(meter: &Meter) -> Arc<crate::meter::redis::RedisStream> {
    match &meter.shared().expect("on").store {
        Store::Redis(s, _) => s.clone(),
        Store::Memory(_) => panic!("redis expected"),
    }
}

#[tokio::test]
async fn concurrent_calls_are_group_committed_in_order_and_trimmed_after_the_ack() {
    let Some(conn) = test_redis().await else {
        return;
    };
    let edge = unique("test-edge");
    let meter = Meter::in_redis(conn.clone(), &edge);
    let drained = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(meter.redis_writer(drained.clone()).expect("writer"));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..500 {
        let m = meter.clone();
        calls.spawn(async move { m.admit(draft(i)).expect("room").expect("on").commit(200, i).await });
    }
    while let Some(r) = calls.join_next().await {
        r.expect("join").expect("committed before answering");
    }
    // Every acknowledged event is in the stream, once, in increasing positions.
    let s = stream(&meter);
    let entries = s.len().await.expect("xlen");
    assert!((1..=500).contains(&entries), "{entries} entries");
    let mut events = Vec::new();
    loop {
        let read = s.read(1000).await.expect("read");
        assert!(read.corrupt.is_empty());
        let Some(last) = read.events.last().map(|e| e.position.parse().expect("pos")) else {
            break;
        };
        events.extend(read.events);
        s.delete_through(last).await.expect("trim");
    }
    assert_eq!(s.len().await.expect("xlen"), 0);
    let positions: Vec<crate::meter::event::Position> =
        events.iter().map(|e| e.position.parse().expect("pos")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let mut bytes: Vec<u64> = events.iter().map(|e| e.bytes_in).collect();
    bytes.sort_unstable();
    assert_eq!(bytes, (0..500).collect::<Vec<_>>());
    println!("500 concurrent events in {entries} stream entries");
    drained.cancel();
    tokio::time::timeout(Duration::from_secs(5), writer).await.expect("writer ends").expect("join");
    del(&conn, &[crate::meter::redis::stream_key(&edge)]).await;
}

#[tokio::test]
async fn a_retried_pipeline_adds_nothing_twice() {
    let Some(conn) = test_redis().await else {
        return;
    };
    let edge = unique("test-edge");
    let meter = Meter::in_redis(conn.clone(), &edge);
    let s = stream(&meter);
    let drained = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(meter.redis_writer(drained.clone()).expect("writer"));
    for i in 0..3 {
        meter.admit(draft(i)).expect("room").expect("on").commit(200, 0).await.expect("committed");
    }
    drained.cancel();
    tokio::time::timeout(Duration::from_secs(5), writer).await.expect("writer ends").expect("join");
    let read = s.read(10).await.expect("read");
    assert_eq!(read.events.len(), 3);
    let entries = s.len().await.expect("xlen");
    // The same ids sent again, as after a write whose answer was lost: refused as
    // "equal or smaller", which the writer takes as "already written".
    for e in &read.events {
        let err = crate::meter::writer::xadd_again(&s, &e.position).await.expect_err("refused");
        assert!(err.to_string().contains("equal or smaller"), "{err}");
    }
    assert_eq!(s.len().await.expect("xlen"), entries);
    del(&conn, &[crate::meter::redis::stream_key(&edge)]).await;
}

#[tokio::test]
async fn while_redis_is_down_calls_are_acknowledged_from_memory() {
    let meter = Meter::in_redis(dead_redis(), &unique("test-edge"));
    let drained = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(meter.redis_writer(drained.clone()).expect("writer"));
    let started = std::time::Instant::now();
    for i in 0..20 {
        meter.admit(draft(i)).expect("room").expect("on").commit(200, 0).await.expect("acknowledged");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    writer.abort();
}
