//! The flusher against a stand-in control plane that commits like the real one (only
//! positions past what a source has committed count): exactly once through crashes
//! before and after the commit, an absent control plane, and a refused event.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use souq_proto::routes::{
    AccessTable, RouteTable, UsageAck, UsageBatch, WatchAccessRequest, WatchRoutesRequest, routes_server,
};
use tonic::{Response, Status};

use super::*;
use crate::meter::{Draft, Kind, Meter, event::Position};

const JOIN: &str = "join-token-0123456789";

/// Commits events past each source's committed position; counts them.
#[derive(Default)]
struct StandIn {
    committed: Mutex<HashMap<String, Position>>,
    counted: Mutex<u64>,
    batches: Mutex<Vec<String>>,
    /// Refuses any batch holding an event of this API, naming the event.
    refuse_api: Option<String>,
}

/// The stand-in as a server (the trait needs a local type).
struct Served(Arc<StandIn>);

#[tonic::async_trait]
impl routes_server::Routes for Served {
    type WatchRoutesStream = tokio_stream::Empty<Result<RouteTable, Status>>;
    type WatchAccessStream = tokio_stream::Empty<Result<AccessTable, Status>>;

    async fn watch_routes(
        &self,
        _: tonic::Request<WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        Err(Status::unimplemented("usage only"))
    }

    async fn watch_access(
        &self,
        _: tonic::Request<WatchAccessRequest>,
    ) -> Result<Response<Self::WatchAccessStream>, Status> {
        Err(Status::unimplemented("usage only"))
    }

    async fn report_usage(&self, req: tonic::Request<UsageBatch>) -> Result<Response<UsageAck>, Status> {
        if !souq_proto::bearer_is(req.metadata(), JOIN) {
            return Err(Status::unauthenticated("bad join token"));
        }
        let b = req.into_inner();
        if let Some(i) = b.events.iter().position(|e| Some(&e.api_id) == self.0.refuse_api.as_ref()) {
            return Err(WireError::invalid(&format!("events[{i}].api_id"), "empty or a UUID").into());
        }
        let last = b.events.last().map(|e| e.position.clone()).unwrap_or_default();
        assert_eq!(b.batch_id, format!("{}/{last}", b.source));
        self.0.batches.lock().expect("lock").push(b.batch_id.clone());
        let mut committed = self.0.committed.lock().expect("lock");
        let through = committed.entry(b.source.clone()).or_default();
        let mut new = 0;
        for e in &b.events {
            let p: Position = e.position.parse().map_err(|_| Status::invalid_argument("position"))?;
            if p > *through {
                *through = p;
                new += 1;
            }
        }
        *self.0.counted.lock().expect("lock") += u64::from(new);
        Ok(Response::new(UsageAck { committed_through: through.to_string(), committed: new }))
    }
}

async fn serve(stand_in: Arc<StandIn>) -> RoutesClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(routes_server::RoutesServer::new(Served(stand_in)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    RoutesClient::new(tonic::transport::Endpoint::from_shared(url).expect("url").connect_lazy())
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
        Store::Redis(s) => s.len().await.map_or(usize::MAX, |n| n as usize),
    }
}

/// Polls until nothing waits and `want` events were counted; fails after 10 s.
async fn settles(meter: &Meter, stand_in: &StandIn, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counted = *stand_in.counted.lock().expect("lock");
        assert!(counted <= want, "counted {counted}, more than {want}");
        let waiting = waiting(meter).await;
        if counted == want && waiting == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "counted {counted} of {want}, {waiting} waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn flusher(meter: &Meter, routes: RoutesClient<Channel>, faults: Arc<FlushFaults>) -> Flusher {
    Flusher {
        shared: meter.shared().expect("on").clone(),
        routes,
        join_token: JOIN.into(),
        interval: Duration::from_millis(30),
        faults,
    }
}

#[tokio::test]
async fn every_event_counts_once_through_crashes_before_and_after_the_commit() {
    let stand_in = Arc::new(StandIn::default());
    let routes = serve(stand_in.clone()).await;
    let meter = Meter::in_memory();
    let faults = Arc::new(FlushFaults::default());
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, routes, faults.clone()).supervise(stop.clone()));

    // More than two full batches: flushed at once, in order.
    record(&meter, "a", 2_500).await;
    settles(&meter, &stand_in, 2_500).await;

    // Dies after the commit, before deleting: the batch goes again and counts nothing.
    faults.crash_after_commit_once();
    record(&meter, "a", 300).await;
    settles(&meter, &stand_in, 2_800).await;
    let batches = stand_in.batches.lock().expect("lock").clone();
    let last = batches.last().expect("a batch");
    assert_eq!(batches.iter().filter(|b| *b == last).count(), 2, "the last batch was sent twice");

    // Dies before sending: the events wait and count once.
    faults.crash_before_commit_once();
    record(&meter, "a", 300).await;
    settles(&meter, &stand_in, 3_100).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");
}

#[tokio::test]
async fn a_redis_stream_counts_once_through_crashes_and_a_restarted_edge_resumes_it() {
    let Some(conn) = crate::redis_tests::test_redis().await else { return };
    let edge = format!("test-edge-{}", uuid::Uuid::new_v4().simple());
    let stand_in = Arc::new(StandIn::default());
    let routes = serve(stand_in.clone()).await;

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
    let task = tokio::spawn(flusher(&meter, routes, faults.clone()).supervise(stop.clone()));
    settles(&meter, &stand_in, 1_200).await;

    faults.crash_after_commit_once();
    record(&meter, "a", 50).await;
    settles(&meter, &stand_in, 1_250).await;
    faults.crash_before_commit_once();
    record(&meter, "a", 50).await;
    settles(&meter, &stand_in, 1_300).await;

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
    let unreachable = RoutesClient::new(tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy());
    let meter = Meter::in_memory();
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, unreachable, Arc::default()).supervise(stop.clone()));
    record(&meter, "a", 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(waiting(&meter).await, 10, "kept");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");

    // The control plane is back: a new flusher sends what waited.
    let stand_in = Arc::new(StandIn::default());
    let routes = serve(stand_in.clone()).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, routes, Arc::default()).supervise(stop.clone()));
    settles(&meter, &stand_in, 10).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");
}

#[tokio::test]
async fn an_event_the_control_plane_refuses_is_dropped_alone() {
    let stand_in = Arc::new(StandIn { refuse_api: Some("bad".into()), ..StandIn::default() });
    let routes = serve(stand_in.clone()).await;
    let meter = Meter::in_memory();
    record(&meter, "a", 3).await;
    record(&meter, "bad", 1).await;
    record(&meter, "a", 3).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(flusher(&meter, routes, Arc::default()).supervise(stop.clone()));
    settles(&meter, &stand_in, 6).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("join");
}

#[test]
fn refused_fields_name_their_event() {
    assert_eq!(refused_event("events[12].user_id"), Some(12));
    assert_eq!(refused_event("events[x].user_id"), None);
    assert_eq!(refused_event("source"), None);
}
