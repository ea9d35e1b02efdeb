//! Deployed APIs: their versions, desired state and status, the reconciler that makes
//! the nodes match, the routes the edges call them by, and their logs.
pub mod apis;
pub mod desired;
pub mod logs;
pub mod plan;
pub mod reconciler;
pub mod reports;
pub mod routes;
pub mod status;
