//! The data path's calls to the node agents: one call tried on the backends of a route in
//! turn until one takes it, over the shared cache of agent clients (one lazily connected
//! channel per agent, made once and reused by every call).
use std::time::Duration;

use axum::http::{Method, StatusCode};
use souq_proto::{
    Kind, WireError,
    agent::{InvokeRequest, InvokeResult},
    agent_clients::{AgentClients, Dialing},
    outcome::{self, Reached},
};
use tokio::time::Instant;
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

/// Why a call got no answer from a handler.
#[derive(Debug)]
pub enum InvokeError {
    /// Every backend refused before running anything (not found, not serving, unreachable).
    NoReplica,
    /// The connection to the API's host broke during the call, which may have run; not
    /// run again, as its method is not idempotent, or no replica or time was left.
    Lost,
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
            InvokeError::Lost => ApiError::new(
                StatusCode::BAD_GATEWAY,
                UPSTREAM_LOST,
                "the API's host was lost during the call; it may have run",
            ),
            InvokeError::Status(s) => agent_error(s),
        }
    }
}

/// The problem type of a call whose host was lost while it ran.
pub const UPSTREAM_LOST: &str = "upstream-lost";

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

/// What a failed attempt means for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing ran: another replica may take the call, whatever its method.
    NotRun,
    /// The agent or its connection was lost during the call: it may have run.
    Lost,
    /// The agent answered for the handler (a timeout, an answer too large, …).
    Answered,
}

/// Sorts a failed attempt by what the agent said (`souq_proto::outcome`) and by how it
/// failed. A status that carries no Souq kind did not come from the agent's code: the
/// transport lost it. NOT_FOUND is "no such instance" whether marked or not, so an agent
/// from before the mark still sends a call on.
fn failure(s: &tonic::Status) -> Failure {
    if outcome::reached(s) == Reached::No {
        return Failure::NotRun;
    }
    if !outcome::souq_made(s) {
        return Failure::Lost;
    }
    match WireError::from(s).kind {
        Kind::NotFound => Failure::NotRun,
        Kind::Unavailable => Failure::Lost,
        _ => Failure::Answered,
    }
}

/// Whether a call may run twice with no other effect than once (RFC 9110, 9.2.2).
pub fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE)
}

/// Runs one call on `route` within `timeout`: on each backend in round-robin turn, at
/// most once each. It moves on when a backend ran nothing, or when the call may have run
/// but `method` is idempotent; a later attempt gets only the time left. The caller
/// bounds the whole in time as well.
pub async fn invoke<'r>(
    agents: &AgentClients,
    route: &'r Route,
    method: &Method,
    event: Vec<u8>,
    timeout: Duration,
) -> Result<(InvokeResult, &'r str), InvokeError> {
    let deadline = Instant::now() + timeout;
    let retry_lost = idempotent(method);
    let candidates: Vec<&Backend> = route.backends_in_turn().collect();
    let mut event = Some(event);
    let mut lost = false;
    for (i, backend) in candidates.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        if i > 0 && left.is_zero() {
            break;
        }
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
            timeout_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
        });
        let s = match client.invoke(req).await {
            Ok(resp) => return Ok((resp.into_inner(), backend.node.as_str())),
            Err(s) => s,
        };
        match failure(&s) {
            Failure::NotRun => {
                debug!(node = %backend.node, instance = %backend.instance_id, code = ?s.code(), "replica ran nothing; trying the next");
            }
            Failure::Lost if retry_lost => {
                warn!(node = %backend.node, instance = %backend.instance_id, code = ?s.code(), %method, "replica lost during an idempotent call; trying the next");
                lost = true;
            }
            Failure::Lost => {
                warn!(node = %backend.node, instance = %backend.instance_id, code = ?s.code(), %method, "replica lost during the call; it may have run, so it is not run again");
                return Err(InvokeError::Lost);
            }
            Failure::Answered => return Err(InvokeError::Status(s)),
        }
    }
    Err(if lost { InvokeError::Lost } else { InvokeError::NoReplica })
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
