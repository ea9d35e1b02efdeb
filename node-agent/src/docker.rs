//! The connection to the Docker Engine, with a clear error when it is not there.
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
