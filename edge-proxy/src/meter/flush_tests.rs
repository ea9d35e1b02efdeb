//! The flusher against a fake control plane that commits like the real one (only
//! positions past what a source has committed count): exactly once through crashes
//! before and after the commit, an absent control plane, and a refused event.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use souq_test_support::FakeMetering;

use super::*;
use crate::meter::{Draft, Kind, Meter};

const JOIN: &str = "join-token-0123456789";

/// A fake `Metering` that expects the join token, served; and a client of it.
async fn serve(fake: &FakeMetering) -> MeteringClient<Channel> {
    let served = fake.serve().await;
    MeteringClient::new(tonic::transport::Endpoint::from_shared(served.url()).expect("url").connect_lazy())
}

fn fake() -> FakeMetering {
    FakeMetering::default().expecting_join_token(JOIN)
}

fn draft(api: &str) -> Draft {
    Draft {
        api_id: api.into(),
        user_id: "u".into(),
        key_id: String::new(),
        subscription_id: String::new(),
        kind: Kind::Call,
        bytes_in: 0,
        started: Instant::now(),
        ts_ms: 1,
    }
}

async fn record(meter: &Meter, api: &str, n: usize) {
    for _ in 0..n {
        meter.admit(draft(api)).expect("room").expect("on").commit(200, 1).await.expect("recorded");
    }
}

async fn waiting(meter: &Meter) -> usize {
    match &meter.shared().expect("on").store {
        Store::Memory(q) => q.len(),
        Store::Redis(s, _) => s.len().await.map_or(usize::MAX, |n| n as usize),
    }
}

/// Polls until nothing waits and `want` events were counted; fails after 10 s.
async fn settles(meter: &Meter, fake: &FakeMetering, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counted = fake.counted();
        assert!(counted <= want, "counted {counted}, more than {want}");
        let waiting = waiting(meter).await;
        if counted == want && waiting == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "counted {counted} of {want}, {waiting} waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn flusher(meter: &Meter, metering: MeteringClient<Channel>, faults: Arc<FlushFaults>) -> Flusher {
    Flusher::new(meter.shared().expect("on").clone(), metering, JOIN.into(), Duration::from_millis(30))
        .with_faults(faults)
}

#[tokio::test]
async fn every_event_counts_once_through_crashes_before_and_after_the_commit() {
    let control_plane = fake();
    let metering = serve(&control_plane).await;
    let meter = Meter::in_memory();
    let faults = Arc::new(FlushFaults::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, metering, faults.clone()).supervise(stop.clone()));

    // More than two full batches: flushed at once, in order.
    record(&meter, "a", 2_500).await;
    settles(&meter, &control_plane, 2_500).await;

    // Dies after the commit, before deleting: the batch goes again and counts nothing.
    faults.crash_after_commit_once();
    record(&meter, "a", 300).await;
    settles(&meter, &control_plane, 2_800).await;
    let batches = control_plane.batches();
    let last = batches.last().expect("a batch");
    assert_eq!(batches.iter().filter(|b| *b == last).count(), 2, "the last batch was sent twice");

    // Dies before sending: the events wait and count once.
    faults.crash_before_commit_once();
    record(&meter, "a", 300).await;
    settles(&meter, &control_plane, 3_100).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");
}

#[tokio::test]
async fn a_redis_stream_counts_once_through_crashes_and_a_restarted_edge_resumes_it() {
    let Some(conn) = crate::test_redis::test_redis().await else {
        return;
    };
    let edge = format!("test-edge-{}", uuid::Uuid::new_v4().simple());
    let control_plane = fake();
    let metering = serve(&control_plane).await;

    // An edge writes events and dies before flushing any.
    let first = Meter::in_redis(conn.clone(), &edge);
    let drained = CancellationToken::new();
    let writer = tokio::spawn(first.redis_writer(drained.clone()).expect("writer"));
    record(&first, "a", 1_200).await;
    writer.abort();

    // The same edge id again: its flusher sends what the first one left.
    let meter = Meter::in_redis(conn.clone(), &edge);
    let drained = CancellationToken::new();
    let writer = tokio::spawn(meter.redis_writer(drained.clone()).expect("writer"));
    let faults = Arc::new(FlushFaults::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, metering, faults.clone()).supervise(stop.clone()));
    settles(&meter, &control_plane, 1_200).await;

    faults.crash_after_commit_once();
    record(&meter, "a", 50).await;
    settles(&meter, &control_plane, 1_250).await;
    faults.crash_before_commit_once();
    record(&meter, "a", 50).await;
    settles(&meter, &control_plane, 1_300).await;

    stop.cancel();
    drained.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");
    tokio::time::timeout(Duration::from_secs(5), writer).await.expect("ends").expect("join");
    let mut c = conn.clone();
    let _: Result<i64, _> = ::redis::cmd("DEL").arg(crate::meter::redis::stream_key(&edge)).query_async(&mut c).await;
}

#[tokio::test]
async fn events_wait_while_the_control_plane_is_away() {
    // Nothing listens on port 1: every report fails.
    let unreachable = MeteringClient::new(tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy());
    let meter = Meter::in_memory();
    let stop = CancellationToken::new();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let task = tokio::spawn(
        flusher(&meter, unreachable, Arc::default()).with_metrics(metrics.clone()).supervise(stop.clone()),
    );
    record(&meter, "a", 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(waiting(&meter).await, 10, "kept");
    assert_eq!(meter.backlog_probe()(), 10, "the backlog shows them");
    assert!(metrics.metering_flush_errors.get() >= 1, "the failed reports are counted");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");

    // The control plane is back: a new flusher sends what waited.
    let control_plane = fake();
    let metering = serve(&control_plane).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, metering, Arc::default()).supervise(stop.clone()));
    settles(&meter, &control_plane, 10).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");
}

#[tokio::test]
async fn an_event_the_control_plane_refuses_is_dropped_alone() {
    let control_plane = fake();
    control_plane.refuse_events_of("bad");
    let metering = serve(&control_plane).await;
    let meter = Meter::in_memory();
    record(&meter, "a", 3).await;
    record(&meter, "bad", 1).await;
    record(&meter, "a", 3).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, metering, Arc::default()).supervise(stop.clone()));
    settles(&meter, &control_plane, 6).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");
}

#[test]
fn refused_fields_name_their_event() {
    assert_eq!(refused_event("events[12].user_id"), Some(12));
    assert_eq!(refused_event("events[x].user_id"), None);
    assert_eq!(refused_event("source"), None);
}
