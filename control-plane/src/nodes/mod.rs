//! The node agents: their registration and heartbeats, placement of work on them, and
//! the gRPC clients the control plane calls them with, and operators' cordons and drains.
//! Knows nothing of what runs there.
pub mod admin;
pub mod agents;
pub mod registry;
pub mod scheduler;

use std::time::Duration;

use sea_orm::DatabaseConnection;

use souq_proto::agent_clients::{AgentClients, Dialing};

/// The nodes area's shared state: the registry's settings and the agents' clients.
pub struct Nodes {
    /// The database.
    pub(crate) db: DatabaseConnection,
    /// Clients of the agents, presenting the join token.
    pub(crate) agents: AgentClients,
    /// How often agents heartbeat.
    pub(crate) heartbeat_interval: Duration,
    /// A node that has not heartbeated for this long is down: it takes no work, and its
    /// instances are replaced.
    pub(crate) node_ttl: Duration,
}

impl Nodes {
    /// The nodes area over `db`; agents are called with `join_token`, which
    /// `Config::validate` has checked can travel as metadata.
    pub fn new(db: DatabaseConnection, join_token: &str, heartbeat_interval: Duration, node_ttl: Duration) -> Self {
        #[allow(clippy::expect_used)]
        let agents = AgentClients::new(join_token, Dialing::default()).expect("a validated join token");
        Nodes { db, agents, heartbeat_interval, node_ttl }
    }

    /// Dials the agents over `transport` (mutual TLS with the control plane's certificate).
    pub fn with_transport(self, transport: souq_proto::tls::Transport) -> Self {
        Nodes { agents: self.agents.with_transport(transport), ..self }
    }
}
