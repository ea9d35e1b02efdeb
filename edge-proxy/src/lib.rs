//! Souq's edge: the public REST face. It validates and authenticates requests, answers
//! errors as problem+json, and translates calls into the control plane's gRPC services
//! (`Accounts`, `Apis`, `Market`, `Execute`). Calls to deployed APIs take the data path:
//! the route table the control plane streams, then straight to the agent that hosts an
//! instance, metered on the way.
#![forbid(unsafe_code)]

pub mod access;
pub mod client_addr;
pub mod config;
pub mod edge_id;
pub mod error;
pub mod extract;
pub mod followed;
pub mod limit;
pub mod meter;
pub mod metrics;
pub mod observe;
pub mod query;
pub mod rest;
pub mod route_table;
pub mod serve;
pub mod state;
pub mod tls;
pub mod token_cache;
pub mod upstream;
pub mod verifier;
pub mod write_timeout;

#[cfg(test)]
mod redis_tests;
#[cfg(test)]
mod test_redis;

use std::time::Duration;

use axum::{Router, http::StatusCode};
use souq_proto::{metering::metering_client::MeteringClient, tasks::Tasks};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::info;

pub use config::{Config, DEFAULT_CALL_BODY_LIMIT, MAX_CALL_BODY_LIMIT};
pub use error::{ApiError, Result};
pub use extract::MAX_BODY_BYTES;
pub use state::AppState;

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed on this route")
}

/// The whole REST router: every route of [`rest::routes`], problem+json for unknown
/// routes and methods, request ids, and a trace, a span and metrics per request (each
/// layer is applied per route, so the span and the metrics see the route template).
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    rest::routes(state.call_body_limit)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(move |req, next| observe::count(metrics.clone(), req, next)))
        .layer(axum::Extension(std::sync::Arc::new(rest::apis::logs::FollowSlots::default())))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(observe::request_span)
                .on_response(observe::on_response),
        )
        .layer(axum::middleware::from_fn(observe::trace))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// How long each stage of the drain may take after the last request (see [`run`]).
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs the edge on `listener` until `shutdown` is cancelled, refusing a config that
/// fails [`Config::validate`].
///
/// Shutdown drains in two stages, each a [`Tasks`] set with its own token, stopped in
/// turn and given [`DRAIN_GRACE`] before what is left is aborted:
/// 1. once [`serve::serve`] has answered its last request, `serving`: the token verifier, the route
///    and access table followers, and the metering writer, which first hands the last
///    events to Redis (no request can submit any more);
/// 2. then `reporting`: the usage flusher, whose last report so carries those events.
///
/// Dropping the future (a crash, in tests) aborts every task at once.
pub async fn run(mut cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let front = serve::Front {
        trusted_proxies: std::sync::Arc::new(
            client_addr::TrustedProxies::parse(&cfg.trusted_proxies).map_err(std::io::Error::other)?,
        ),
        tls: cfg.tls.as_ref().map(tls::acceptor).transpose().map_err(std::io::Error::other)?,
    };
    let edge_id = cfg.edge_id.get_or_insert_with(|| edge_id::derive(&edge_id::hostname(), Some(addr))).clone();
    let state = AppState::new(&cfg, shutdown.clone()).map_err(std::io::Error::other)?;
    let mut serving = Tasks::new(CancellationToken::new());
    let mut reporting = Tasks::new(CancellationToken::new());

    let (verifier, accounts, every, stop) =
        (state.verifier.clone(), state.accounts.clone(), cfg.revocation_poll, serving.token());
    serving.spawn("token verifier", async move {
        verifier.fetch(accounts.clone(), stop.clone()).await;
        verifier.follow_revocations(accounts, every, stop).await;
    });
    let agents = state.agents.clone();
    serving.spawn(
        "route table follower",
        route_table::follow(
            state.routes.clone(),
            state.control_plane.clone(),
            cfg.join_token.clone(),
            serving.token(),
            move |table| {
                agents.retain(table.agent_addrs());
            },
        ),
    );
    serving.spawn(
        "access table follower",
        access::follow(state.access.clone(), state.control_plane.clone(), cfg.join_token.clone(), serving.token()),
    );
    if let Some(writer) = state.meter.redis_writer(serving.token()) {
        serving.spawn("metering writer", writer);
    }
    if let Some(shared) = state.meter.shared() {
        let metering = MeteringClient::new(state.control_plane.clone());
        let flusher = meter::flush::Flusher::new(shared.clone(), metering, cfg.join_token.clone(), cfg.flush_interval)
            .with_metrics(cfg.metrics.clone());
        #[cfg(any(test, feature = "fault-injection"))]
        let flusher = flusher.with_faults(cfg.flush_faults.clone());
        reporting.spawn("usage flusher", flusher.supervise(reporting.token()));
    }

    let scheme = if front.tls.is_some() { "https" } else { "http" };
    info!(addr = %addr, scheme, edge_id = %edge_id, metering = state.meter.mode(), "edge listening");
    let limits = serve::Limits {
        header_read: cfg.header_read_timeout,
        body_read: cfg.body_read_timeout,
        write: cfg.write_timeout,
        max_connections: cfg.max_connections,
    };
    let served = serve::serve(listener, router(state), limits, front, shutdown).await;
    serving.shutdown(DRAIN_GRACE).await;
    reporting.shutdown(DRAIN_GRACE).await;
    served
}
