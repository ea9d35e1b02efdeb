//! The data path's calls to the node agents: one call tried on the backends of a route in
//! turn until one takes it, over the shared cache of agent clients (one lazily connected
//! channel per agent, made once and reused by every call).
use std::time::Duration;

use axum::http::StatusCode;
use souq_proto::{
    agent::{InvokeRequest, InvokeResult},
    agent_clients::{AgentClients, Dialing},
};
use tonic::Code;
use tracing::{debug, error, warn};

use crate::{
    error::ApiError,
    route_table::{Backend, Route},
};

/// How long to wait for a TCP connection to an agent before trying the next replica.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// HTTP/2 pings find a dead agent connection instead of waiting out the call deadline.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer accepted from an agent: its output cap (1 MiB by default) with room
/// for JSON escaping.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// How the data path dials agents: a quick connect, so a dead replica costs little before
/// the next is tried, and HTTP/2 pings that find a dead connection before a call's
/// deadline does.
pub const DIALING: Dialing = Dialing {
    connect_timeout: CONNECT_TIMEOUT,
    keepalive: Some((KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)),
    max_answer_bytes: MAX_ANSWER_BYTES,
};

/// Why a call did not reach a handler.
#[derive(Debug)]
pub enum InvokeError {
    /// Every backend refused before running anything (not found, not serving, unreachable).
    NoReplica,
    /// A backend answered with an error after taking the call; not retried.
    Status(tonic::Status),
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::NoReplica => ApiError {
                retry_after: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "no replica of this API could take the call",
                )
            },
            InvokeError::Status(s) => agent_error(s),
        }
    }
}

/// The client-facing error of an agent's refusal. Errors that are the platform's own
/// fault (a join token the agent refuses, a message over the size limit) are never shown
/// as the caller's fault.
fn agent_error(s: tonic::Status) -> ApiError {
    let bad_gateway = |detail: &str| ApiError::new(StatusCode::BAD_GATEWAY, "bad-gateway", detail);
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            error!(code = ?s.code(), "an agent refused the edge's join token");
            bad_gateway("the API's host refused the call")
        }
        Code::OutOfRange => bad_gateway("the call or its answer is larger than the data path carries"),
        _ => ApiError::from(s),
    }
}

/// Whether a failed attempt ran nothing, so another replica may take the call.
fn retryable(code: Code) -> bool {
    matches!(code, Code::NotFound | Code::Unavailable)
}

/// Runs one call on `route`: on each backend in round-robin turn, at most once each,
/// moving on only when a backend ran nothing. The caller bounds the whole in time.
pub async fn invoke<'r>(
    agents: &AgentClients,
    route: &'r Route,
    event: Vec<u8>,
) -> Result<(InvokeResult, &'r str), InvokeError> {
    let timeout_ms = u64::try_from(route.timeout.as_millis()).unwrap_or(u64::MAX);
    let candidates: Vec<&Backend> = route.backends_in_turn().collect();
    let mut event = Some(event);
    for (i, backend) in candidates.iter().enumerate() {
        let mut client = match agents.get(&backend.agent_addr) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "route names an agent address that is no URL");
                continue;
            }
        };
        // The last attempt takes the event; earlier ones copy it, in case they fail.
        let payload = if i + 1 == candidates.len() { event.take() } else { event.clone() };
        let req = agents.request(InvokeRequest {
            instance_id: backend.instance_id.clone(),
            event: payload.unwrap_or_default(),
            timeout_ms,
        });
        match client.invoke(req).await {
            Ok(resp) => return Ok((resp.into_inner(), backend.node.as_str())),
            Err(s) if retryable(s.code()) => {
                debug!(node = %backend.node, instance = %backend.instance_id, code = ?s.code(), "replica did not take the call; trying the next");
            }
            Err(s) => return Err(InvokeError::Status(s)),
        }
    }
    Err(InvokeError::NoReplica)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_ran_nothing_move_on() {
        assert!(retryable(Code::NotFound));
        assert!(retryable(Code::Unavailable));
        assert!(!retryable(Code::DeadlineExceeded));
        assert!(!retryable(Code::Internal));
        assert!(!retryable(Code::Unknown));
    }

    #[test]
    fn platform_faults_are_not_the_callers() {
        assert_eq!(agent_error(tonic::Status::unauthenticated("bad join token")).status, StatusCode::BAD_GATEWAY);
        assert_eq!(agent_error(tonic::Status::out_of_range("too big")).status, StatusCode::BAD_GATEWAY);
        let timeout: tonic::Status = souq_proto::WireError::new(souq_proto::Kind::Timeout, "too slow").into();
        let e = agent_error(timeout);
        assert_eq!((e.status, e.kind), (StatusCode::GATEWAY_TIMEOUT, "timeout"));
        let e = ApiError::from(InvokeError::NoReplica);
        assert_eq!((e.status, e.retry_after), (StatusCode::SERVICE_UNAVAILABLE, Some(1)));
    }

    #[tokio::test]
    async fn an_unreachable_replica_is_skipped_and_none_left_is_503() {
        use souq_proto::routes::{Backend as WireBackend, Route as WireRoute, RouteTable as WireTable};
        // Port 1 on loopback refuses at once: both attempts fail before sending anything.
        let backend = |id: &str| WireBackend {
            instance_id: id.into(),
            agent_addr: "http://127.0.0.1:1".into(),
            node: "n".into(),
            version: 1,
        };
        let wire = WireTable {
            generation: 1,
            routes: vec![WireRoute {
                slug: "a".into(),
                api_id: "id".into(),
                owner_id: "o".into(),
                public: false,
                timeout_ms: 1000,
                backends: vec![backend("x"), backend("y")],
            }],
        };
        let table = crate::route_table::RouteTable::from_wire(wire, &Default::default());
        let agents = AgentClients::new("join-token-0123456789", DIALING).expect("token");
        let route = table.get("a").expect("route");
        let out = invoke(&agents, route, b"{}".to_vec()).await;
        assert!(matches!(out, Err(InvokeError::NoReplica)), "{out:?}");
    }
}
