//! Clients of the node agents' `Agent` service: one lazily connected channel per agent
//! address, made on first use and shared by every call, dialed over the role's
//! [`Transport`] (mutual TLS, the agents holding agent certificates), and the cluster's
//! join token that every call must carry. The control plane and the edge's data path each keep one cache
//! and drop the clients of agents that are gone.
use std::{
    collections::{HashMap, HashSet},
    sync::RwLock,
    time::Duration,
};

use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::{
    agent::agent_client::AgentClient,
    tls::{Role, Transport},
};

/// How a cache dials its agents.
#[derive(Debug, Clone, Copy)]
pub struct Dialing {
    /// How long to wait for a TCP connection before the agent counts as unreachable.
    pub connect_timeout: Duration,
    /// HTTP/2 pings (interval, then patience for the answer), so a dead connection is
    /// found before a call's own deadline; `None` for none.
    pub keepalive: Option<(Duration, Duration)>,
    /// Largest answer accepted from an agent.
    pub max_answer_bytes: usize,
}

impl Default for Dialing {
    fn default() -> Self {
        Dialing { connect_timeout: Duration::from_secs(2), keepalive: None, max_answer_bytes: 4 * 1024 * 1024 }
    }
}

/// A cache of agent clients keyed by address, and the join token they present.
pub struct AgentClients {
    clients: RwLock<HashMap<String, AgentClient<Channel>>>,
    /// `Bearer <join token>`, parsed once.
    authorization: MetadataValue<Ascii>,
    dialing: Dialing,
    transport: Transport,
}

impl std::fmt::Debug for AgentClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the join token.
        f.debug_struct("AgentClients").field("agents", &self.len()).finish_non_exhaustive()
    }
}

impl AgentClients {
    /// Clients that present `join_token` to the agents; refuses a token that cannot be
    /// sent as metadata (see [`crate::limits::check_join_token`]).
    pub fn new(join_token: &str, dialing: Dialing) -> Result<Self, String> {
        let authorization =
            format!("Bearer {join_token}").parse().map_err(|_| "the join token must be printable ASCII".to_owned())?;
        Ok(AgentClients { clients: RwLock::default(), authorization, dialing, transport: Transport::Insecure })
    }

    /// Dials the agents over `transport` (plain text until told).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// A request carrying the join token, as agents require.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        self.authorize(&mut req);
        req
    }

    /// Adds the join token and the current trace context to a request.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        req.metadata_mut().insert("authorization", self.authorization.clone());
        crate::trace::inject(req.metadata_mut());
    }

    /// The client of the agent at `address`, made on first use; an error says why the
    /// address is not a URL.
    pub fn get(&self, address: &str) -> Result<AgentClient<Channel>, String> {
        if let Some(c) = self.clients.read().ok().and_then(|m| m.get(address).cloned()) {
            return Ok(c);
        }
        let endpoint: Endpoint =
            self.transport.endpoint(address, Role::Agent).map_err(|e| format!("agent address {e}"))?;
        let mut endpoint = endpoint.connect_timeout(self.dialing.connect_timeout).tcp_nodelay(true);
        if let Some((interval, patience)) = self.dialing.keepalive {
            endpoint = endpoint.http2_keep_alive_interval(interval).keep_alive_timeout(patience);
        }
        let client = AgentClient::new(endpoint.connect_lazy()).max_decoding_message_size(self.dialing.max_answer_bytes);
        match self.clients.write() {
            Ok(mut m) => Ok(m.entry(address.to_owned()).or_insert(client).clone()),
            Err(_) => Ok(client),
        }
    }

    /// Drops every client whose address `live` does not name; returns how many went.
    /// Calls under way on a dropped client finish (they hold their own channel handle).
    pub fn retain<'a>(&self, live: impl IntoIterator<Item = &'a str>) -> usize {
        let live: HashSet<&str> = live.into_iter().collect();
        let Ok(mut clients) = self.clients.write() else { return 0 };
        let before = clients.len();
        clients.retain(|address, _| live.contains(address.as_str()));
        before - clients.len()
    }

    /// Drops the client of `address`, if any: its agent moved away.
    pub fn forget(&self, address: &str) {
        if let Ok(mut clients) = self.clients.write() {
            clients.remove(address);
        }
    }

    /// How many clients are cached.
    pub fn len(&self) -> usize {
        self.clients.read().map_or(0, |c| c.len())
    }

    /// Whether no client is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clients_are_cached_per_address_forgotten_and_pruned() {
        let agents = AgentClients::new("join-token-0123456789", Dialing::default()).expect("token");
        assert!(AgentClients::new("bad\ntoken-0123456789", Dialing::default()).is_err());
        agents.get("http://127.0.0.1:1").expect("client");
        agents.get("http://127.0.0.1:1").expect("client");
        agents.get("http://127.0.0.1:2").expect("client");
        assert!(agents.get("not a url").is_err());
        assert_eq!(agents.len(), 2);
        agents.forget("http://127.0.0.1:2");
        assert_eq!(agents.len(), 1);
        agents.get("http://127.0.0.1:3").expect("client");
        assert_eq!(agents.retain(["http://127.0.0.1:3"]), 1);
        assert_eq!(agents.len(), 1);
        let req = agents.request(());
        assert_eq!(
            req.metadata().get("authorization").map(|v| v.to_str().ok()),
            Some(Some("Bearer join-token-0123456789"))
        );
    }
}
