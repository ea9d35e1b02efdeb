//! What a fake's table stream (`WatchRoutes`, `WatchAccess`) sends each subscriber: the
//! same table stream the control plane serves, made of tables a test chooses.
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// One subscriber's stream of tables.
pub type TableStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

enum Source<T> {
    OnePerWatch(Box<dyn Fn(u64) -> T + Send + Sync>),
    Tables(Vec<T>),
}

/// The tables a fake serves. Cheap to clone; clones share the count of subscriptions.
pub struct Feed<T> {
    source: Arc<Source<T>>,
    watches: Arc<AtomicU64>,
}

impl<T> Clone for Feed<T> {
    fn clone(&self) -> Self {
        Feed { source: self.source.clone(), watches: self.watches.clone() }
    }
}

impl<T: Clone + Send + 'static> Feed<T> {
    /// The `n`-th subscription (from 1) gets `table(n)`, then its stream ends, as when
    /// the control plane goes away: a follower has to subscribe again.
    pub fn one_per_watch(table: impl Fn(u64) -> T + Send + Sync + 'static) -> Self {
        Self::of(Source::OnePerWatch(Box::new(table)))
    }

    /// Every subscription gets `tables` in order, then stays open until the server stops.
    pub fn tables(tables: Vec<T>) -> Self {
        Self::of(Source::Tables(tables))
    }

    fn of(source: Source<T>) -> Self {
        Feed { source: Arc::new(source), watches: Arc::default() }
    }

    /// How many subscriptions were served.
    pub fn watches(&self) -> u64 {
        self.watches.load(Ordering::SeqCst)
    }

    /// The stream of one new subscription.
    pub fn subscribe(&self) -> TableStream<T> {
        let n = self.watches.fetch_add(1, Ordering::SeqCst) + 1;
        match &*self.source {
            Source::OnePerWatch(table) => Box::pin(tokio_stream::once(Ok(table(n)))),
            Source::Tables(tables) => {
                let sent: Vec<Result<T, Status>> = tables.iter().cloned().map(Ok).collect();
                Box::pin(tokio_stream::iter(sent).chain(tokio_stream::pending()))
            }
        }
    }
}
