//! gRPC clients of the node agents, one lazily connected channel per agent address.
use std::{collections::HashMap, sync::Mutex, time::Duration};

use souq_proto::agent::agent_client::AgentClient;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// How long to wait for a TCP connection to an agent before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A cache of agent clients keyed by address.
#[derive(Default)]
pub struct AgentClients {
    clients: Mutex<HashMap<String, AgentClient<Channel>>>,
}

impl AgentClients {
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
