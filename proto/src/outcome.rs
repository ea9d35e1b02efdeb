//! Whether a call reached the handler: the agent says so when it ran nothing, and the edge retries a call elsewhere only when it did not, or when its method is idempotent.
//!
//! Two sources of certainty, and nothing else: the agent's own word (its refusals that
//! ran nothing carry [`NOT_RUN_KEY`]), and failures that happen before any byte of the
//! request leaves the caller (the connection was refused, timed out or found no address;
//! the peer refused the HTTP/2 stream). Every other failure, a broken connection above
//! all, may have come after the handler started: [`Reached::Maybe`].
use std::error::Error as StdError;

use tonic::{Status, metadata::MetadataValue};

/// The metadata key an agent sets on a refusal that ran nothing (`souq-not-run: 1`).
pub const NOT_RUN_KEY: &str = "souq-not-run";

/// Most links of a status's `source()` chain looked at: a bound against a cycle.
const MAX_CHAIN: usize = 16;

/// Whether a failed call reached the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Certainly not: another replica may take the call, whatever its method.
    No,
    /// Perhaps: it may have run, so only an idempotent call may run again.
    Maybe,
}

/// Marks `status` as a refusal that ran nothing.
pub fn mark_not_run(status: &mut Status) {
    status.metadata_mut().insert(NOT_RUN_KEY, MetadataValue::from_static("1"));
}

/// `status`, marked as a refusal that ran nothing.
pub fn not_run(mut status: Status) -> Status {
    mark_not_run(&mut status);
    status
}

/// Whether the agent said that `status` ran nothing.
pub fn said_not_run(status: &Status) -> bool {
    status.metadata().get(NOT_RUN_KEY).is_some_and(|v| v.as_bytes() == b"1")
}

/// Whether Souq's code made `status` (it carries a `problem::Kind`), rather than the
/// transport under it.
pub fn souq_made(status: &Status) -> bool {
    // `problem.rs`'s key; the tests pin that a `WireError`'s status has it.
    status.metadata().contains_key("souq-kind")
}

/// Whether the failed call of `status` reached the handler: [`Reached::No`] when the agent
/// said so, or when the failure came before the request went out; else
/// [`Reached::Maybe`].
pub fn reached(status: &Status) -> Reached {
    if said_not_run(status) || never_sent(status) { Reached::No } else { Reached::Maybe }
}

/// Whether a link of the status's cause chain shows that the request never left: a
/// connection that was never made (refused, timed out, no address), a request hyper gave
/// back untaken as its connection closed, or an HTTP/2 stream the peer refused
/// unprocessed. Neither hyper-util's `ConnectError` nor h2's `Error` is a
/// dependency of this crate, so both are known by their text, which the tests pin
/// against what tonic really reports.
fn never_sent(status: &Status) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = status.source();
    for _ in 0..MAX_CHAIN {
        let Some(e) = cause else { return false };
        let text = e.to_string();
        if CONNECT_ERRORS.contains(&text.as_str()) || text == REFUSED_STREAM {
            return true;
        }
        cause = e.source();
        if text == HYPER_CANCELED && cause.is_some_and(|c| NEVER_TAKEN.contains(&c.to_string().as_str())) {
            return true;
        }
    }
    false
}

/// hyper-util's connector failing before the connection existed (tonic's connect timeout
/// is the connector's, so it reads "tcp connect error" too): nothing was written.
const CONNECT_ERRORS: &[&str] = &[
    "tcp connect error",
    "dns error",
    "tcp open error",
    "tcp set_nonblocking error",
    "tcp bind local error",
    "tcp bind interface error",
];
/// hyper's text of a request it gave back unsent ...
const HYPER_CANCELED: &str = "operation was canceled";
/// ... because the connection closed (or was closing) before its task took the request
/// from the queue: seen when an agent drains (it sends GOAWAY) while calls wait for its
/// connection. A request the task took and then lost fails with an h2 or I/O error.
const NEVER_TAKEN: &[&str] = &["connection closed", "connection was not ready"];
/// h2's text of a stream the peer reset with REFUSED_STREAM, which a peer sends only for a
/// stream it did not process (RFC 9113, 8.7).
const REFUSED_STREAM: &str = "stream error received: refused stream before processing any application logic";

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
