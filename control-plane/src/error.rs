//! The control plane's error type, and the one place it becomes a `tonic::Status`.
use souq_proto::{Kind, WireError};

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request the client can fix; reaches the client as is.
    #[error("{0:?}")]
    Wire(WireError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A configuration `run` cannot start with; see [`crate::Config::validate`].
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Anything else unexpected; logged, and reported to the client generically.
    #[error("{0}")]
    Internal(String),
}

/// The control plane's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A validation error naming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::Wire(WireError::invalid(field, message))
    }

    /// An error of `kind` whose message is safe to show.
    pub fn kind(kind: Kind, message: impl Into<String>) -> Self {
        Error::Wire(WireError::new(kind, message))
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        Error::Wire(e)
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        match e {
            Error::Wire(w) => w.into(),
            Error::Db(err) => {
                tracing::error!(error = &err as &dyn std::error::Error, "database error");
                WireError::new(Kind::Unavailable, "the database is unavailable").into()
            }
            Error::Config(err) => {
                tracing::error!(error = %err, "configuration error");
                WireError::new(Kind::Internal, "internal error").into()
            }
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                WireError::new(Kind::Internal, "internal error").into()
            }
        }
    }
}
