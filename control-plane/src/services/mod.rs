//! The gRPC services, one module per proto service. This layer is the only one that
//! crosses areas: it checks who calls, hands each request to the area that owns the flow,
//! and makes the side effects one area's change has on another explicit calls.
pub mod accounts;
pub mod apis;
#[cfg(test)]
mod db_tests;
#[cfg(test)]
mod plan_history_db_tests;
pub mod execute;
pub mod market;
pub mod metering;
pub mod nodes;
pub mod registry;
pub mod routes;

use std::sync::Arc;

use souq_proto::Kind;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    accounts::session,
    error::{Error, Result},
    state::State,
};

/// What every RPC answers.
type Answer<T> = Result<Response<T>, Status>;

/// An area's answer on the wire; errors become a `Status` in `crate::error`.
fn ok<T>(r: Result<T>) -> Answer<T> {
    r.map(Response::new).map_err(Status::from)
}

/// The id of the user whose access token the request carries.
async fn user<T>(state: &State, req: &Request<T>) -> Result<Uuid, Status> {
    Ok(session::caller(&state.accounts, souq_proto::bearer(req.metadata())).await?.id)
}

/// The caller, for calls that anyone may make: none without a token; a token that is
/// present must be valid.
async fn maybe_user<T>(state: &State, req: &Request<T>) -> Result<Option<Uuid>, Status> {
    match souq_proto::bearer(req.metadata()) {
        None => Ok(None),
        Some(token) => Ok(Some(session::caller(&state.accounts, Some(token)).await?.id)),
    }
}

/// Admits calls of the cluster's own roles (agents, edges): they carry the join token.
fn join_token<T>(state: &State, req: &Request<T>) -> Result<(), Status> {
    if souq_proto::bearer_is(req.metadata(), &state.join_token) {
        Ok(())
    } else {
        Err(Error::kind(Kind::Unauthenticated, "invalid join token").into())
    }
}

/// Streams the current table, then each newer one, until the caller goes away or shutdown
/// starts (`draining`). A slow caller skips the tables it had no time for and gets the
/// newest.
fn stream_of<T: Clone + Send + Sync + 'static>(
    mut rx: watch::Receiver<Arc<T>>,
    draining: CancellationToken,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, out) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let table = T::clone(&rx.borrow_and_update());
            if tx.send(Ok(table)).await.is_err() {
                return;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
                () = draining.cancelled() => return,
            }
        }
    });
    ReceiverStream::new(out)
}
