//! Souq's wire: the generated gRPC code, the domain types both sides agree on, and the
//! mapping of error kinds onto `tonic::Status`, plus the rules every hop shares: the
//! runtimes, the limits and defaults, and the one shutdown pattern of every role.
#![forbid(unsafe_code)]

pub mod agent_clients;
pub mod claims;
pub mod fence;
pub mod limits;
pub mod metrics;
pub mod outcome;
pub mod problem;
pub mod runtime;
pub mod tasks;
pub mod tls;
pub mod trace;

/// Declares each package's generated code (`souq.<name>.v1`, compiled by `build.rs`,
/// nested as the package path so cross-package references resolve) and re-exports it at
/// the crate root as `<name>`.
macro_rules! packages {
    ($($(#[doc = $doc:literal])+ $name:ident;)+) => {
        #[allow(clippy::all, missing_docs)]
        mod generated {
            pub mod souq {
                $(pub mod $name {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/souq.", stringify!($name), ".v1.rs"));
                    }
                })+
            }
        }
        $($(#[doc = $doc])+ pub use generated::souq::$name::v1 as $name;)+
    };
}

packages! {
    /// `souq.accounts.v1`: signup, login, sessions and passwords, for the edge.
    accounts;
    /// `souq.agent.v1`: the node agent's service.
    agent;
    /// `souq.apis.v1`: deployed APIs, their versions, desired state, status and logs, for the edge.
    apis;
    /// `souq.execute.v1`: one-shot execution of a snippet, for the edge.
    execute;
    /// `souq.market.v1`: plans, the catalogue, subscriptions, keys and usage, for the edge.
    market;
    /// `souq.metering.v1`: the data path's access table and usage reports, for the edge.
    metering;
    /// `souq.nodes.v1`: operators' view of the nodes: list, cordon, drain, uncordon.
    nodes;
    /// `souq.registry.v1`: node registration and heartbeats.
    registry;
    /// `souq.routes.v1`: the data path's route table, for the edge.
    routes;
}

pub use claims::Claims;
pub use problem::{Kind, WireError};
pub use runtime::Runtime;

/// Sets `authorization: Bearer <token>` on a gRPC request (a token that is not valid
/// metadata is left off, and the callee then refuses the call), and the current trace
/// context, so the callee's span joins the caller's trace.
pub fn set_bearer<T>(req: &mut tonic::Request<T>, token: &str) {
    if let Ok(v) = format!("Bearer {token}").parse::<tonic::metadata::MetadataValue<_>>() {
        req.metadata_mut().insert("authorization", v);
    }
    trace::inject(req.metadata_mut());
}

/// Whether the request's bearer token is `secret`, compared in constant time.
pub fn bearer_is(meta: &tonic::metadata::MetadataMap, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(bearer(meta).unwrap_or_default().as_bytes().ct_eq(secret.as_bytes()))
}

impl agent::InstanceState {
    /// The state's name in the REST contract and in the control plane's records:
    /// `starting` (an unspecified state counts as starting), `running`, `failed` or
    /// `crashed`.
    pub fn name(self) -> &'static str {
        match self {
            agent::InstanceState::Unspecified | agent::InstanceState::Starting => "starting",
            agent::InstanceState::Running => "running",
            agent::InstanceState::Failed => "failed",
            agent::InstanceState::Crashed => "crashed",
        }
    }
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
