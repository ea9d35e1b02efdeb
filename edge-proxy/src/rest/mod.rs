//! The REST contract: one module per area, and [`documented`], the one list that both
//! serves the routes and documents them, so a route cannot be served undocumented or
//! documented unserved. The few routes deliberately left out of the document are all in
//! `undocumented`.
pub mod accounts;
pub mod admin;
pub mod apis;
pub mod call;
pub mod execute;
pub mod health;
pub mod market;
pub mod openapi;

#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod router_tests;
#[cfg(test)]
mod trace_tests;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, routing::get};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::{AppState, config::DEFAULT_CALL_BODY_LIMIT, extract::MAX_BODY_BYTES};

/// Longest a management call that changes access waits for this edge's access table to
/// show the change (it normally lands within milliseconds); then it answers anyway.
pub(crate) const ACCESS_PATIENCE: Duration = Duration::from_secs(2);

/// A gRPC request with a deadline, the current trace context and, when given, the
/// caller's bearer token.
pub(crate) fn grpc<T>(msg: T, token: Option<&str>, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    match token {
        Some(t) => souq_proto::set_bearer(&mut req, t),
        None => souq_proto::trace::inject(req.metadata_mut()),
    }
    req
}

/// A plain message.
#[derive(Serialize, ToSchema)]
pub struct MessageBody {
    /// What happened.
    pub message: String,
}

/// THE list of documented routes, each area's `routes()` made of `routes!(handler, …)`
/// entries: the handler's `#[utoipa::path]` is both its route and its documentation.
/// Management routes take bodies of at most [`MAX_BODY_BYTES`]; calls to deployed APIs
/// at most `call_body_limit`.
pub fn documented(call_body_limit: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(accounts::routes())
        .merge(apis::routes())
        .merge(market::routes())
        .merge(execute::routes())
        .merge(admin::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(call::routes().layer(DefaultBodyLimit::max(call_body_limit)))
}

/// The routes deliberately left out of the document, all of them:
/// - `GET /reset-password`: the HTML page a reset mail links to, not an API;
/// - `GET /api/v1/openapi.json`: the document itself;
/// - `GET /healthz`, `GET /readyz`: for operators and orchestrators;
/// - `GET /metrics`: Prometheus metrics, for operators (404 unless exposition is on).
///
/// The data path's other forms (`/call/{slug}` and `/call/{slug}/`, any method) are served
/// beside its one documented form, in [`call::routes`].
fn undocumented(doc: utoipa::openapi::OpenApi) -> Router<AppState> {
    let doc = Arc::new(doc);
    Router::new()
        .route("/reset-password", get(accounts::reset_page::reset_password))
        .route("/api/v1/openapi.json", get(move || async move { axum::Json(doc.as_ref().clone()) }))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
}

/// Every REST route, documented or not, awaiting the state.
pub fn routes(call_body_limit: usize) -> Router<AppState> {
    let (documented, doc) = documented(call_body_limit).split_for_parts();
    documented.merge(undocumented(doc))
}

/// The OpenAPI document the edge serves at `/api/v1/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    documented(DEFAULT_CALL_BODY_LIMIT).into_openapi()
}
