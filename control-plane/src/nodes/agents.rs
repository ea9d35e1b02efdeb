//! The control plane's cache of agent clients follows the registry: the client of an
//! address no live node has any more (the node is gone, silent past the node TTL, or
//! moved) is dropped.
use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::EntityTrait;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Nodes;
use crate::entity::nodes;

/// The addresses of the nodes that heartbeated within `node_ttl` of `now`.
pub fn live_addresses(rows: &[nodes::Model], now: DateTime<Utc>, node_ttl: Duration) -> HashSet<&str> {
    let ttl = chrono::Duration::from_std(node_ttl).unwrap_or(chrono::Duration::MAX);
    rows.iter().filter(|n| now.signed_duration_since(n.last_heartbeat) <= ttl).map(|n| n.address.as_str()).collect()
}

/// Every node TTL, drops the clients of agents no live node has, until `shutdown`.
pub(crate) async fn forget_gone(fleet: Arc<Nodes>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(fleet.node_ttl) => {}
        }
        match nodes::Entity::find().all(&fleet.db).await {
            Ok(rows) => {
                let dropped = fleet.agents.retain(live_addresses(&rows, Utc::now(), fleet.node_ttl));
                if dropped > 0 {
                    debug!(dropped, "dropped the clients of gone agents");
                }
            }
            Err(e) => warn!(error = %e, "could not read the nodes to prune agent clients"),
        }
    }
}

#[cfg(test)]
mod tests {
    use souq_proto::agent_clients::{AgentClients, Dialing};

    use super::*;

    fn node(address: &str, age_s: i64, now: DateTime<Utc>) -> nodes::Model {
        nodes::Model::sample(address, address, now - chrono::Duration::seconds(age_s))
    }

    #[tokio::test]
    async fn clients_of_gone_or_moved_agents_are_dropped() {
        let now = Utc::now();
        let clients = AgentClients::new("join-token", Dialing::default()).unwrap();
        for a in ["http://a:7100", "http://b:7100", "http://c:7100", "http://old-d:7100"] {
            clients.get(a).unwrap();
        }
        clients.get("http://a:7100").unwrap();
        assert_eq!(clients.len(), 4, "one client per address");
        // a is live; b went silent past the TTL; c is no longer registered; d moved.
        let rows = [node("http://a:7100", 1, now), node("http://b:7100", 60, now), node("http://new-d:7100", 0, now)];
        let live = live_addresses(&rows, now, Duration::from_secs(15));
        assert_eq!(live, HashSet::from(["http://a:7100", "http://new-d:7100"]));
        assert_eq!(clients.retain(live), 3);
        assert_eq!(clients.len(), 1);
        // A node that comes back gets a fresh client on its next call.
        clients.get("http://b:7100").unwrap();
        assert_eq!(clients.len(), 2);
        clients.forget("http://b:7100");
        assert_eq!(clients.len(), 1);
        assert!(!clients.is_empty());
    }
}
