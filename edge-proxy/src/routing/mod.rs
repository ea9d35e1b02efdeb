//! The data path's route table: slug → API, owner and backends, as the control plane
//! streams it. Readers take a cheap `Arc` snapshot, so a call never waits on an update.
pub mod watch;

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use souq_proto::routes::RouteTable as WireTable;

/// One running instance that can take calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The instance the agent should run the call on.
    pub instance_id: String,
    /// The hosting agent's gRPC URL.
    pub agent_addr: String,
    /// The node's name, for logs.
    pub node: String,
}

/// One API as the data path sees it.
#[derive(Debug)]
pub struct Route {
    /// The API's id.
    pub api_id: String,
    /// The user whose bearer token may call it.
    pub owner_id: String,
    /// Listed in the marketplace.
    pub public: bool,
    /// Wall timeout of one call.
    pub timeout: Duration,
    /// Running instances, in the control plane's stable order.
    pub backends: Vec<Backend>,
    /// Round-robin position; carried across table updates so a busy route keeps spreading.
    next: AtomicUsize,
}

impl Route {
    /// The backends to try for one call: each exactly once, starting at the next in the
    /// round-robin, so consecutive calls start on different replicas.
    pub fn backends_in_turn(&self) -> impl Iterator<Item = &Backend> {
        let n = self.backends.len();
        let start = if n == 0 { 0 } else { self.next.fetch_add(1, Ordering::Relaxed) % n };
        (0..n).filter_map(move |i| self.backends.get((start + i) % n))
    }
}

/// A whole route table, indexed by slug.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The control plane's generation of this table; 0 when none was received.
    pub generation: u64,
    routes: HashMap<String, Arc<Route>>,
}

impl RouteTable {
    /// Indexes a table from the wire. Round-robin positions of routes in `previous` carry
    /// over. A repeated slug keeps its first route (slugs are unique; this is defence).
    pub fn from_wire(table: WireTable, previous: &RouteTable) -> Self {
        let mut routes = HashMap::with_capacity(table.routes.len());
        for r in table.routes {
            if routes.contains_key(&r.slug) {
                tracing::warn!(slug = %r.slug, "route table repeats a slug; keeping the first");
                continue;
            }
            let next = previous.routes.get(&r.slug).map_or(0, |p| p.next.load(Ordering::Relaxed));
            let backends = r
                .backends
                .into_iter()
                .map(|b| Backend { instance_id: b.instance_id, agent_addr: b.agent_addr, node: b.node })
                .collect();
            let route = Route {
                api_id: r.api_id,
                owner_id: r.owner_id,
                public: r.public,
                timeout: Duration::from_millis(r.timeout_ms),
                backends,
                next: AtomicUsize::new(next),
            };
            routes.insert(r.slug, Arc::new(route));
        }
        RouteTable { generation: table.generation, routes }
    }

    /// The route of `slug`.
    pub fn get(&self, slug: &str) -> Option<&Arc<Route>> {
        self.routes.get(slug)
    }

    /// How many APIs the table holds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table holds no API.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every agent address the table names.
    pub fn agent_addrs(&self) -> impl Iterator<Item = &str> {
        self.routes.values().flat_map(|r| r.backends.iter().map(|b| b.agent_addr.as_str()))
    }
}

/// The current table, shared by the watcher (one writer) and every call (readers).
#[derive(Debug, Default)]
pub struct Routing {
    current: RwLock<Arc<RouteTable>>,
    /// Tables received since start; 0 until the first.
    received: AtomicU64,
}

impl Routing {
    /// A snapshot of the current table: one `Arc` clone under a read lock.
    pub fn snapshot(&self) -> Arc<RouteTable> {
        match self.current.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a table has been received since start.
    pub fn has_table(&self) -> bool {
        self.received.load(Ordering::Relaxed) > 0
    }

    /// Replaces the table with `wire`, unless `wire` is the control plane's empty
    /// placeholder (generation 0) and a real table is already held: the edge never trades
    /// known routes for nothing. Returns the new table when it was installed.
    pub fn install(&self, wire: WireTable) -> Option<Arc<RouteTable>> {
        if wire.generation == 0 && wire.routes.is_empty() && self.has_table() {
            return None;
        }
        let previous = self.snapshot();
        let table = Arc::new(RouteTable::from_wire(wire, &previous));
        match self.current.write() {
            Ok(mut t) => *t = table.clone(),
            Err(poisoned) => *poisoned.into_inner() = table.clone(),
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        Some(table)
    }
}

#[cfg(test)]
mod tests {
    use souq_proto::routes::{Backend as WireBackend, Route as WireRoute};

    use super::*;

    fn wire_route(slug: &str, backends: &[&str]) -> WireRoute {
        WireRoute {
            slug: slug.into(),
            api_id: format!("id-{slug}"),
            owner_id: "owner".into(),
            public: false,
            timeout_ms: 1500,
            backends: backends
                .iter()
                .map(|b| WireBackend {
                    instance_id: (*b).into(),
                    agent_addr: format!("http://{b}"),
                    node: "n".into(),
                    version: 1,
                })
                .collect(),
        }
    }

    fn order(route: &Route) -> Vec<String> {
        route.backends_in_turn().map(|b| b.instance_id.clone()).collect()
    }

    #[test]
    fn indexes_by_slug_and_keeps_the_first_of_a_repeated_slug() {
        let wire = WireTable {
            generation: 3,
            routes: vec![wire_route("a", &["x"]), wire_route("b", &[]), wire_route("a", &["y"])],
        };
        let table = RouteTable::from_wire(wire, &RouteTable::default());
        assert_eq!(table.len(), 2);
        assert_eq!(table.generation, 3);
        let a = table.get("a").expect("a");
        assert_eq!(a.api_id, "id-a");
        assert_eq!(a.timeout, Duration::from_millis(1500));
        assert_eq!(order(a), ["x"]);
        assert!(table.get("b").expect("b").backends.is_empty());
        assert!(table.get("c").is_none());
    }

    #[test]
    fn round_robin_tries_each_backend_once_and_rotates() {
        let table = RouteTable::from_wire(
            WireTable { generation: 1, routes: vec![wire_route("a", &["x", "y", "z"])] },
            &RouteTable::default(),
        );
        let a = table.get("a").expect("a");
        assert_eq!(order(a), ["x", "y", "z"]);
        assert_eq!(order(a), ["y", "z", "x"]);
        assert_eq!(order(a), ["z", "x", "y"]);
        assert_eq!(order(a), ["x", "y", "z"]);
        let empty = RouteTable::from_wire(
            WireTable { generation: 1, routes: vec![wire_route("e", &[])] },
            &RouteTable::default(),
        );
        assert_eq!(empty.get("e").expect("e").backends_in_turn().count(), 0);
    }

    #[test]
    fn round_robin_position_survives_an_update() {
        let routing = Routing::default();
        routing.install(WireTable { generation: 1, routes: vec![wire_route("a", &["x", "y"])] });
        let first = routing.snapshot();
        assert_eq!(order(first.get("a").expect("a")), ["x", "y"]);
        routing.install(WireTable { generation: 2, routes: vec![wire_route("a", &["x", "y"])] });
        assert_eq!(order(routing.snapshot().get("a").expect("a")), ["y", "x"]);
    }

    #[test]
    fn a_placeholder_table_never_replaces_known_routes() {
        let routing = Routing::default();
        assert!(!routing.has_table());
        assert!(routing.install(WireTable { generation: 0, routes: vec![] }).is_some());
        assert!(routing.has_table());
        routing.install(WireTable { generation: 5, routes: vec![wire_route("a", &["x"])] });
        assert!(routing.install(WireTable { generation: 0, routes: vec![] }).is_none());
        assert!(routing.snapshot().get("a").is_some());
        // A real, newer, empty table does clear it: every API was deleted.
        routing.install(WireTable { generation: 6, routes: vec![] });
        assert!(routing.snapshot().is_empty());
    }
}
