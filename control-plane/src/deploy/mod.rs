//! Deploying APIs: their desired state and status, the reconciler that makes the nodes
//! match, what agents report of their instances, the routes the edges call them by, and
//! their logs. Builds on `apis` and `nodes`; knows nothing of the marketplace.
pub mod desired;
pub mod logs;
pub mod plan;
pub mod reconciler;
pub mod reports;
pub mod routes;
pub mod status;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use sea_orm::DatabaseConnection;
use souq_proto::routes::RouteTable;
use tokio::sync::{Notify, watch};

use crate::{metrics::Metrics, nodes::Nodes};

/// The deploy area's shared state: its settings, the reconciler's wake-up, the route
/// table the edges watch, and the agent calls under way.
pub struct Deployer {
    /// The database.
    pub(crate) db: DatabaseConnection,
    /// The node agents the instances run on.
    pub(crate) nodes: Arc<Nodes>,
    /// The wall timeout of one call to a deployed API.
    pub(crate) call_timeout: Duration,
    /// Most replicas one deployment may ask for.
    pub(crate) max_replicas: u32,
    /// Wakes the reconciler.
    reconcile: Notify,
    /// The route table the edges watch.
    pub(crate) routes: watch::Sender<Arc<RouteTable>>,
    /// Instances with a Deploy or Stop call to their agent under way.
    calls: Mutex<HashSet<String>>,
    /// Held by a deploy from its version and quota checks to its write, and by a put of
    /// code while it prunes old versions: concurrent deploys cannot each pass the quota
    /// with the same headroom, and a version cannot be pruned between a deploy's check
    /// that it exists and the write that names it.
    pub(crate) checks: tokio::sync::Mutex<()>,
    /// Where the reconciler counts and times its actions.
    pub(crate) metrics: Arc<Metrics>,
}

impl Deployer {
    /// The deploy area over `db`, placing on `nodes`.
    pub fn new(db: DatabaseConnection, nodes: Arc<Nodes>, call_timeout: Duration, max_replicas: u32) -> Self {
        Deployer {
            db,
            nodes,
            call_timeout,
            max_replicas,
            reconcile: Notify::new(),
            routes: watch::Sender::new(Arc::new(RouteTable::default())),
            calls: Mutex::default(),
            checks: tokio::sync::Mutex::new(()),
            metrics: Arc::default(),
        }
    }

    /// The same, counting the reconciler's actions in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        Deployer { metrics, ..self }
    }

    /// Asks the reconciler for a pass soon.
    pub(crate) fn wake(&self) {
        self.reconcile.notify_one();
    }

    /// Claims instance `id` for one agent call; false if a call for it is under way.
    fn begin_call(&self, id: &str) -> bool {
        self.calls.lock().is_ok_and(|mut c| c.insert(id.to_owned()))
    }

    /// Ends the call claimed by `begin_call`.
    fn end_call(&self, id: &str) {
        if let Ok(mut c) = self.calls.lock() {
            c.remove(id);
        }
    }

    /// Forgets every call claimed: the reconciler aborted them (it lost the lead), so
    /// their `end_call` never runs.
    fn clear_calls(&self) {
        if let Ok(mut c) = self.calls.lock() {
            c.clear();
        }
    }

    /// Runs one reconciler action, counting it (by its result) and timing it as `action`.
    pub(crate) async fn timed<T, E>(&self, action: &'static str, work: impl Future<Output = Result<T, E>>) -> Result<T, E> {
        let started = std::time::Instant::now();
        let done = work.await;
        self.metrics.action(action, done.is_ok(), started.elapsed());
        done
    }

    /// The call timeout in milliseconds, as the wire carries it.
    fn call_timeout_ms(&self) -> u64 {
        u64::try_from(self.call_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}
