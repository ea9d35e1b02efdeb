//! The data path's route table: slug → API, owner and backends, as the control plane
//! streams it (`Routes.WatchRoutes`), followed for as long as the edge runs.
use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use souq_proto::routes::{RouteTable as WireTable, WatchRoutesRequest, routes_client::RoutesClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::info;

use crate::followed::{self, Followed, MAX_TABLE_BYTES, Table};

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

impl Table for RouteTable {
    type Wire = WireTable;

    fn is_placeholder(wire: &WireTable) -> bool {
        wire.generation == 0 && wire.routes.is_empty()
    }

    fn from_wire(wire: WireTable, previous: &RouteTable) -> Self {
        RouteTable::from_wire(wire, previous)
    }
}

/// Follows `Routes.WatchRoutes` into `table` until `shutdown`, reconnecting with backoff;
/// while the control plane is away, the last table keeps serving. `installed` sees each
/// new table (the edge drops the clients of agents it no longer names).
pub async fn follow(
    table: Arc<Followed<RouteTable>>,
    channel: Channel,
    join_token: String,
    shutdown: CancellationToken,
    mut installed: impl FnMut(&RouteTable),
) {
    let client = RoutesClient::new(channel).max_decoding_message_size(MAX_TABLE_BYTES);
    let open = move || {
        let mut client = client.clone();
        let mut req = tonic::Request::new(WatchRoutesRequest {});
        souq_proto::set_bearer(&mut req, &join_token);
        async move { client.watch_routes(req).await.map(tonic::Response::into_inner) }
    };
    followed::follow(&table, "routes", open, shutdown, |t: &RouteTable| {
        info!(generation = t.generation, routes = t.len(), "route table updated");
        installed(t);
    })
    .await;
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
        let routes = Followed::<RouteTable>::default();
        routes.install(WireTable { generation: 1, routes: vec![wire_route("a", &["x", "y"])] });
        let first = routes.snapshot();
        assert_eq!(order(first.get("a").expect("a")), ["x", "y"]);
        routes.install(WireTable { generation: 2, routes: vec![wire_route("a", &["x", "y"])] });
        assert_eq!(order(routes.snapshot().get("a").expect("a")), ["y", "x"]);
    }

    #[test]
    fn a_placeholder_table_never_replaces_known_routes() {
        let routes = Followed::<RouteTable>::default();
        assert!(!routes.has_table());
        assert!(routes.install(WireTable { generation: 0, routes: vec![] }).is_some());
        assert!(routes.has_table());
        routes.install(WireTable { generation: 5, routes: vec![wire_route("a", &["x"])] });
        assert!(routes.install(WireTable { generation: 0, routes: vec![] }).is_none());
        assert!(routes.snapshot().get("a").is_some());
        // A real, newer, empty table does clear it: every API was deleted.
        routes.install(WireTable { generation: 6, routes: vec![] });
        assert!(routes.snapshot().is_empty());
    }

    #[tokio::test]
    async fn resubscribes_and_keeps_the_last_table_when_the_control_plane_goes() {
        const JOIN: &str = "join-token-0123456789";
        let feed = souq_test_support::Feed::one_per_watch(|generation| WireTable {
            generation,
            routes: vec![wire_route(&format!("s{generation}"), &[])],
        });
        let server = souq_test_support::FakeRoutes::new(feed).expecting_join_token(JOIN).serve().await;
        let table = Arc::new(Followed::<RouteTable>::default());
        let channel = tonic::transport::Endpoint::from_shared(server.url()).expect("url").connect_lazy();
        let stop = CancellationToken::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let follower = tokio::spawn(follow(table.clone(), channel, JOIN.into(), stop.clone(), move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        }));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while table.snapshot().generation < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second table");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kept = table.snapshot();
        assert!(kept.generation >= 2 && kept.len() == 1, "the last table is kept");
        assert!(seen.load(Ordering::Relaxed) >= 2, "every installed table was handed on");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("the follower ends at shutdown")
            .expect("join");
    }
}
