//! Souq's wire: the generated gRPC code, the domain types both sides agree on, and the
//! mapping of error kinds onto `tonic::Status`.
#![forbid(unsafe_code)]

pub mod claims;
pub mod problem;
pub mod runtime;

#[allow(clippy::all, missing_docs)]
mod generated {
    pub mod souq {
        pub mod agent {
            pub mod v1 {
                tonic::include_proto!("souq.agent.v1");
            }
        }
        pub mod registry {
            pub mod v1 {
                tonic::include_proto!("souq.registry.v1");
            }
        }
        pub mod platform {
            pub mod v1 {
                tonic::include_proto!("souq.platform.v1");
            }
        }
        pub mod routes {
            pub mod v1 {
                tonic::include_proto!("souq.routes.v1");
            }
        }
    }
}

/// `souq.agent.v1`: the node agent's service.
pub use generated::souq::agent::v1 as agent;
/// `souq.platform.v1`: the control plane's service for the edge.
pub use generated::souq::platform::v1 as platform;
/// `souq.registry.v1`: node registration and heartbeats.
pub use generated::souq::registry::v1 as registry;
/// `souq.routes.v1`: the data path's route table, for the edge.
pub use generated::souq::routes::v1 as routes;

pub use claims::Claims;
pub use problem::{Kind, WireError};
pub use runtime::Runtime;

/// Sets `authorization: Bearer <token>` on a gRPC request (a token that is not valid
/// metadata is left off, and the callee then refuses the call).
pub fn set_bearer<T>(req: &mut tonic::Request<T>, token: &str) {
    if let Ok(v) = format!("Bearer {token}").parse::<tonic::metadata::MetadataValue<_>>() {
        req.metadata_mut().insert("authorization", v);
    }
}

/// Whether the request's bearer token is `secret`, compared in constant time.
pub fn bearer_is(meta: &tonic::metadata::MetadataMap, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(bearer(meta).unwrap_or_default().as_bytes().ct_eq(secret.as_bytes()))
}

impl agent::ExecuteResult {
    /// A run succeeded when it exited on its own with code 0 before its timeout.
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }
}

/// Reads `authorization: Bearer <token>` from gRPC metadata.
pub fn bearer(meta: &tonic::metadata::MetadataMap) -> Option<&str> {
    meta.get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
