//! The connection to the Docker Engine: one lazily made client per agent, with a clear
//! error when the Engine is not there; and the count of failed Engine requests by
//! operation, which every call site of bollard reports through [`Operation::failed`].
use std::sync::{Mutex, PoisonError, RwLock};

use bollard::{API_DEFAULT_VERSION, Docker};
use prometheus_client::metrics::{counter::Counter, family::Family};

use crate::{
    error::{Error, Result},
    metrics::OperationLabels,
};

/// A kind of Engine request, the `operation` label of `souq_agent_docker_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Making the client.
    Connect,
    /// `GET /_ping`.
    Ping,
    /// Creating a container.
    Create,
    /// Starting a container.
    Start,
    /// Waiting for a container to exit.
    Wait,
    /// Inspecting a container.
    Inspect,
    /// Removing a container.
    Remove,
    /// Listing containers.
    List,
    /// Inspecting an image.
    InspectImage,
    /// Importing images.
    ImportImage,
}

impl Operation {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Connect => "connect",
            Operation::Ping => "ping",
            Operation::Create => "create",
            Operation::Start => "start",
            Operation::Wait => "wait",
            Operation::Inspect => "inspect",
            Operation::Remove => "remove",
            Operation::List => "list",
            Operation::InspectImage => "inspect_image",
            Operation::ImportImage => "import_image",
        }
    }

    /// Counts one failed request of this kind.
    pub fn failed(self) {
        let sink = ERRORS.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(errors) = sink.as_ref() {
            errors.get_or_create(&OperationLabels { operation: self.as_str() }).inc();
        }
    }

    /// Counts `e`, the error of a request of this kind, unless it only says that the
    /// container to wait for, inspect or remove is gone already.
    pub fn failed_with(self, e: &bollard::errors::Error) {
        let gone = matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. });
        if !(gone && matches!(self, Operation::Wait | Operation::Inspect | Operation::Remove)) {
            self.failed();
        }
    }

    /// A `map_err` for a bollard call of this kind: counts it and converts the error.
    pub fn error(self) -> impl FnOnce(bollard::errors::Error) -> Error {
        move |e| {
            self.failed_with(&e);
            Error::from(e)
        }
    }
}

/// Where [`Operation::failed`] counts: the agent's counter, set by the agent as it starts.
/// Most bollard calls are made far from the agent's state (a sandbox holds only its
/// client), so the counter is the process's: with more than one agent in a process (only
/// in tests), the last one started counts for all.
static ERRORS: RwLock<Option<Family<OperationLabels, Counter>>> = RwLock::new(None);

/// Makes [`Operation::failed`] count in `errors` from now on.
pub fn count_errors_in(errors: Family<OperationLabels, Counter>) {
    *ERRORS.write().unwrap_or_else(PoisonError::into_inner) = Some(errors);
}

/// Seconds any single Engine request may take.
const REQUEST_TIMEOUT_S: u64 = 120;

/// Connects to the Engine at `host` (`unix:///path`), or at `DOCKER_HOST` or the
/// default socket when `host` is `None`. Nothing is sent yet; see [`ping`].
pub fn connect(host: Option<&str>) -> Result<Docker> {
    let docker = match host {
        Some(h) => Docker::connect_with_unix(h, REQUEST_TIMEOUT_S, API_DEFAULT_VERSION),
        None => Docker::connect_with_local_defaults(),
    };
    docker.map_err(|e| {
        Operation::Connect.failed();
        Error::DockerUnavailable(e.to_string())
    })
}

/// Whether the Engine answers, within two seconds.
pub async fn ping(docker: &Docker) -> bool {
    let ok = matches!(tokio::time::timeout(std::time::Duration::from_secs(2), docker.ping()).await, Ok(Ok(_)));
    if !ok {
        Operation::Ping.failed();
    }
    ok
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

/// Held by the tests that set the process's error counter, one at a time.
#[cfg(test)]
pub(crate) static COUNTER_IN_USE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failed_requests_are_counted_by_operation() {
        let _held = COUNTER_IN_USE.lock().await;
        let errors = Family::<OperationLabels, Counter>::default();
        count_errors_in(errors.clone());
        let count = |operation| errors.get_or_create(&OperationLabels { operation }).get();
        assert!(connect(Some("unix:///nonexistent/souq-test.sock")).is_err());
        assert_eq!(count("connect"), 1);
        // A socket nobody listens on any more: connection refused.
        let dir = std::env::temp_dir().join(format!("souq-engine-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let _ = std::fs::remove_file(&socket);
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let docker = connect(Some(&format!("unix://{}", socket.display()))).unwrap();
        assert!(!ping(&docker).await);
        assert_eq!(count("ping"), 1);
        let _ = std::fs::remove_dir_all(&dir);
        let gone = bollard::errors::Error::DockerResponseServerError { status_code: 404, message: "gone".into() };
        Operation::Remove.failed_with(&gone);
        assert_eq!(count("remove"), 0, "removing what is gone already is no error");
        let error = Operation::Create.error()(gone);
        assert!(matches!(error, Error::Docker(_)), "{error:?}");
        assert_eq!(count("create"), 1, "a missing image is");
    }
}
