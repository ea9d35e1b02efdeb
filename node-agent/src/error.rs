//! The agent's error type, and the one place it becomes a `tonic::Status`.
use souq_proto::{Kind, WireError};

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Docker Engine cannot be reached.
    #[error("Docker Engine unreachable: {0}")]
    DockerUnavailable(String),
    /// The Docker Engine answered with an error.
    #[error("Docker Engine error: {0}")]
    Docker(String),
    /// A request the caller can fix.
    #[error("{0:?}")]
    Wire(WireError),
    /// The configuration [`crate::Config::validate`] refused; the message names the option.
    #[error("{0}")]
    Config(String),
    /// Anything else unexpected.
    #[error("{0}")]
    Internal(String),
}

/// The agent's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<bollard::errors::Error> for Error {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError { status_code, message } => {
                Error::Docker(format!("{status_code}: {message}"))
            }
            B::JsonDataError { .. } | B::JsonSerdeError { .. } | B::DockerContainerWaitError { .. } => {
                Error::Docker(e.to_string())
            }
            // Socket missing, connection refused or reset, timeouts: the Engine is down.
            other => Error::DockerUnavailable(other.to_string()),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        match e {
            Error::Wire(w) => w.into(),
            Error::DockerUnavailable(cause) => {
                tracing::error!(%cause, "Docker Engine unreachable");
                WireError::new(Kind::DockerUnavailable, "the node's Docker Engine is unreachable").into()
            }
            Error::Docker(cause) => {
                tracing::error!(%cause, "Docker Engine error");
                WireError::new(Kind::Internal, "internal error").into()
            }
            Error::Config(cause) | Error::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                WireError::new(Kind::Internal, "internal error").into()
            }
        }
    }
}
