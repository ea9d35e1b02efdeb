//! A fake of the control plane's `Metering`: `WatchAccess` serves the access tables of a
//! [`Feed`], and `ReportUsage` commits like the real one (only positions past what a
//! source has committed count, so a batch sent twice counts once), records what it got,
//! and fails on demand.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use souq_proto::{
    Kind, WireError,
    metering::{
        AccessTable, UsageAck, UsageBatch, WatchAccessRequest,
        metering_server::{Metering, MeteringServer},
    },
};
use tonic::{Request, Response, Status};

use crate::{Feed, Served, bearer_ok, feed::TableStream, serve};

/// A position `<ms>-<n>`, compared as a pair of numbers.
type Position = (u64, u64);

fn parse_position(p: &str) -> Option<Position> {
    let (ms, n) = p.split_once('-')?;
    Some((ms.parse().ok()?, n.parse().ok()?))
}

#[derive(Default)]
struct Ledger {
    /// Source → the position committed through.
    committed: HashMap<String, Position>,
    /// Every batch id received, in order, repeats included.
    batches: Vec<String>,
}

#[derive(Default)]
struct Usage {
    ledger: Mutex<Ledger>,
    counted: AtomicU64,
    /// Refuse any batch holding an event of this API, naming the event.
    refuse_api: Mutex<Option<String>>,
    /// Answer UNAVAILABLE, as a control plane that is away.
    unavailable: AtomicBool,
}

impl Usage {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A fake `Metering`. Cheap to clone; clones share the feed and the ledger.
#[derive(Clone)]
pub struct FakeMetering {
    access: Feed<AccessTable>,
    usage: Arc<Usage>,
    join_token: Option<String>,
}

impl Default for FakeMetering {
    fn default() -> Self {
        Self::new(Feed::tables(Vec::new()))
    }
}

impl FakeMetering {
    /// Serves `access` to every `WatchAccess`, and commits every usage report.
    pub fn new(access: Feed<AccessTable>) -> Self {
        FakeMetering { access, usage: Arc::default(), join_token: None }
    }

    /// Refuses calls that do not carry `token` as their bearer (UNAUTHENTICATED).
    pub fn expecting_join_token(mut self, token: &str) -> Self {
        self.join_token = Some(token.to_owned());
        self
    }

    /// Refuses, from now on, any batch holding an event of `api_id`, as a validation
    /// error naming that event's field (`events[i].api_id`), as the control plane refuses
    /// an event it can never commit.
    pub fn refuse_events_of(&self, api_id: &str) {
        *self.usage.refuse_api.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(api_id.to_owned());
    }

    /// While `away`, every report is answered UNAVAILABLE.
    pub fn set_unavailable(&self, away: bool) {
        self.usage.unavailable.store(away, Ordering::SeqCst);
    }

    /// Events committed so far, each counted once.
    pub fn counted(&self) -> u64 {
        self.usage.counted.load(Ordering::SeqCst)
    }

    /// Every batch id received, in order, repeats included.
    pub fn batches(&self) -> Vec<String> {
        self.usage.ledger().batches.clone()
    }

    /// The access feed, to count subscriptions.
    pub fn access(&self) -> &Feed<AccessTable> {
        &self.access
    }

    /// The gRPC service, to serve beside others with [`crate::serve`].
    pub fn service(&self) -> MeteringServer<FakeMetering> {
        MeteringServer::new(self.clone())
    }

    /// Serves it alone on a loopback port.
    pub async fn serve(&self) -> Served {
        serve(tonic::service::Routes::new(self.service())).await
    }

    fn commit(&self, batch: UsageBatch) -> Result<UsageAck, Status> {
        let refused = self.usage.refuse_api.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(i) = batch.events.iter().position(|e| Some(&e.api_id) == refused.as_ref()) {
            return Err(WireError::invalid(&format!("events[{i}].api_id"), "empty or a UUID").into());
        }
        let last = batch.events.last().map(|e| e.position.as_str()).unwrap_or_default();
        if batch.batch_id != format!("{}/{last}", batch.source) {
            return Err(WireError::invalid("batch_id", "must be <source>/<last position>").into());
        }
        let mut ledger = self.usage.ledger();
        ledger.batches.push(batch.batch_id.clone());
        let through = ledger.committed.entry(batch.source).or_default();
        let mut new = 0;
        for e in &batch.events {
            let p = parse_position(&e.position)
                .ok_or_else(|| Status::from(WireError::invalid("events.position", "must be <ms>-<n>")))?;
            if p > *through {
                *through = p;
                new += 1;
            }
        }
        let committed_through = format!("{}-{}", through.0, through.1);
        self.usage.counted.fetch_add(u64::from(new), Ordering::SeqCst);
        Ok(UsageAck { committed_through, committed: new })
    }
}

#[tonic::async_trait]
impl Metering for FakeMetering {
    type WatchAccessStream = TableStream<AccessTable>;

    async fn watch_access(
        &self,
        req: Request<WatchAccessRequest>,
    ) -> Result<Response<Self::WatchAccessStream>, Status> {
        if !bearer_ok(&req, self.join_token.as_deref()) {
            return Err(WireError::new(Kind::Unauthenticated, "bad join token").into());
        }
        Ok(Response::new(self.access.subscribe()))
    }

    async fn report_usage(&self, req: Request<UsageBatch>) -> Result<Response<UsageAck>, Status> {
        if !bearer_ok(&req, self.join_token.as_deref()) {
            return Err(WireError::new(Kind::Unauthenticated, "bad join token").into());
        }
        if self.usage.unavailable.load(Ordering::SeqCst) {
            return Err(WireError::new(Kind::Unavailable, "the control plane is away").into());
        }
        self.commit(req.into_inner()).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use souq_proto::metering::UsageEvent;

    use super::*;

    fn batch(source: &str, positions: &[&str]) -> UsageBatch {
        let events: Vec<UsageEvent> =
            positions.iter().map(|p| UsageEvent { position: (*p).into(), ..UsageEvent::default() }).collect();
        let last = positions.last().copied().unwrap_or_default();
        UsageBatch { source: source.into(), batch_id: format!("{source}/{last}"), events }
    }

    #[test]
    fn commits_each_position_once_per_source() {
        let m = FakeMetering::default();
        let ack = m.commit(batch("a", &["0-1", "0-2"])).expect("ok");
        assert_eq!((ack.committed_through.as_str(), ack.committed), ("0-2", 2));
        let ack = m.commit(batch("a", &["0-1", "0-2", "0-10"])).expect("ok");
        assert_eq!((ack.committed_through.as_str(), ack.committed), ("0-10", 1));
        assert_eq!(m.commit(batch("b", &["0-1"])).expect("ok").committed, 1);
        assert_eq!(m.counted(), 4);
        assert_eq!(m.batches(), ["a/0-2", "a/0-10", "b/0-1"]);
    }

    #[test]
    fn refuses_a_named_event_and_a_wrong_batch_id() {
        let m = FakeMetering::default();
        m.refuse_events_of("bad");
        let mut b = batch("a", &["0-1", "0-2"]);
        b.events[1].api_id = "bad".into();
        let wire = WireError::from(&m.commit(b).expect_err("refused"));
        assert_eq!(wire.field.as_deref(), Some("events[1].api_id"));
        let mut b = batch("a", &["0-1"]);
        b.batch_id = "a/0-9".into();
        assert!(m.commit(b).is_err());
        assert_eq!(m.counted(), 0);
    }
}
