//! gRPC clients of the node agents, one lazily connected channel per agent address.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use souq_proto::agent::agent_client::AgentClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long to wait for a TCP connection to an agent before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A cache of agent clients keyed by address.
pub struct AgentClients {
    clients: Mutex<HashMap<String, AgentClient<Channel>>>,
    join_token: String,
}

impl AgentClients {
    /// Clients that present `join_token` to the agents.
    pub fn new(join_token: &str) -> Self {
        AgentClients { clients: Mutex::default(), join_token: join_token.to_owned() }
    }

    /// Adds the join token to a call, as agents require.
    pub fn authorize<T>(&self, req: &mut tonic::Request<T>) {
        souq_proto::set_bearer(req, &self.join_token);
    }

    /// The client for the agent at `address`, made on first use.
    pub fn get(&self, address: &str) -> Result<AgentClient<Channel>> {
        let mut clients = self.clients.lock().map_err(|_| Error::Internal("agent clients lock poisoned".into()))?;
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|e| Error::Internal(format!("agent address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let client = AgentClient::new(endpoint.connect_lazy());
        clients.insert(address.to_owned(), client.clone());
        Ok(client)
    }
}
