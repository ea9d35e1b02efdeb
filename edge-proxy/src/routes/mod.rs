//! The REST routes, one module per area of the contract.
pub mod apis;
pub mod auth;
pub mod call;
pub mod execute;
pub mod health;
pub mod keys;
pub mod logs;
pub mod marketplace;
pub mod pages;
pub mod plans;
pub mod usage;

#[cfg(test)]
mod market_router_tests;
#[cfg(test)]
mod router_tests;

use std::time::Duration;

/// Longest a management call that changes access waits for this edge's access table to
/// show the change (it normally lands within milliseconds); then it answers anyway.
pub(crate) const ACCESS_PATIENCE: Duration = Duration::from_secs(2);

/// A gRPC request with a deadline and, when given, the caller's bearer token.
pub(crate) fn grpc<T>(msg: T, token: Option<&str>, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    if let Some(t) = token {
        souq_proto::set_bearer(&mut req, t);
    }
    req
}
