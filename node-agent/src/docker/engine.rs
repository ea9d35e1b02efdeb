//! The connection to the Docker Engine: one lazily made client per agent, with a clear
//! error when the Engine is not there.
use std::sync::Mutex;

use bollard::{API_DEFAULT_VERSION, Docker};

use crate::error::{Error, Result};

/// Seconds any single Engine request may take.
const REQUEST_TIMEOUT_S: u64 = 120;

/// Connects to the Engine at `host` (`unix:///path`), or at `DOCKER_HOST` or the
/// default socket when `host` is `None`. Nothing is sent yet; see [`ping`].
pub fn connect(host: Option<&str>) -> Result<Docker> {
    let docker = match host {
        Some(h) => Docker::connect_with_unix(h, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION),
        None => Docker::connect_with_local_defaults(),
    };
    docker.map_err(|e| Error::DockerUnavailable(e.to_string()))
}

/// Whether the Engine answers, within two seconds.
pub async fn ping(docker: &Docker) -> bool {
    matches!(tokio::time::timeout(std::time::Duration::from_secs(2), docker.ping()).await, Ok(Ok(_)))
}

/// The Engine client of this agent, made on first use and made again if that failed, so
/// an agent started before its Engine recovers once the Engine is up.
#[derive(Debug)]
pub struct Engine {
    host: Option<String>,
    cached: Mutex<Option<Docker>>,
}

impl Engine {
    /// An engine at `host` (see [`connect`]); nothing is sent yet.
    pub fn new(host: Option<String>) -> Self {
        Engine { host, cached: Mutex::new(None) }
    }

    /// The client, connecting if no earlier attempt succeeded.
    pub fn get(&self) -> Result<Docker> {
        let mut cached = self.cached.lock().map_err(|_| Error::Internal("docker lock poisoned".into()))?;
        if let Some(d) = cached.as_ref() {
            return Ok(d.clone());
        }
        let d = connect(self.host.as_deref())?;
        *cached = Some(d.clone());
        Ok(d)
    }
}
