//! Liveness, readiness and the metrics exposition.
use std::time::Duration;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use souq_proto::accounts::GetVerifyingKeyRequest;

use super::grpc;
use crate::AppState;

/// The process is up.
pub async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// The edge can serve: it holds the token key, the control plane answers, and it has
/// received the route and access tables (before them, calls with API keys answer 503 and
/// every call 404). The chart uses this as the startup probe only, so an edge that has
/// started stays in service on its last tables while the control plane is away.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Value>) {
    let cp = state
        .accounts
        .clone()
        .get_verifying_key(grpc(GetVerifyingKeyRequest {}, None, Duration::from_secs(1)))
        .await
        .is_ok();
    let key = state.verifier.ready();
    let (has_routes, has_access) = (state.routes.has_table(), state.access.has_table());
    let ready = cp && key && has_routes && has_access;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let table = state.routes.snapshot();
    let routes = json!({"received": has_routes, "generation": table.generation, "apis": table.len()});
    let access = state.access.snapshot();
    let access = json!({"received": has_access, "generation": access.generation,
        "keys": access.key_count(), "grants": access.grant_count()});
    let body = json!({"ready": ready, "control_plane": cp, "token_key": key, "routes": routes,
        "access": access, "metering": state.meter.mode()});
    (status, axum::Json(body))
}

/// The Prometheus exposition of the edge's registry (OpenMetrics text); the usual 404
/// problem when the edge exposes none.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.exposition {
        Some(registry) => {
            ([(header::CONTENT_TYPE, souq_proto::metrics::CONTENT_TYPE)], souq_proto::metrics::encode(registry))
                .into_response()
        }
        None => crate::not_found().await.into_response(),
    }
}
