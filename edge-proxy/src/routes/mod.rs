//! The REST routes, one module per area of the contract.
pub mod apis;
pub mod auth;
pub mod call;
pub mod execute;
pub mod health;
pub mod logs;
pub mod pages;

#[cfg(test)]
mod router_tests;

use std::time::Duration;

/// A gRPC request with a deadline and, when given, the caller's bearer token.
pub(crate) fn grpc<T>(msg: T, token: Option<&str>, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    if let Some(t) = token {
        souq_proto::set_bearer(&mut req, t);
    }
    req
}
