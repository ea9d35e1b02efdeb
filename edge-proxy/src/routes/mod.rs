//! The REST routes, one module per area of the contract.
pub mod auth;
pub mod execute;
pub mod health;
pub mod pages;

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
