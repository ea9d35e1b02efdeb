//! Liveness and readiness.
use std::time::Duration;

use axum::{extract::State, http::StatusCode};
use serde_json::{Value, json};
use souq_proto::accounts::GetVerifyingKeyRequest;

use super::grpc;
use crate::AppState;

/// The process is up.
pub async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// The edge can serve: it holds the token key and the control plane answers. The route
/// and access tables' states and the metering mode come along.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Value>) {
    let cp = state
        .accounts
        .clone()
        .get_verifying_key(grpc(GetVerifyingKeyRequest {}, None, Duration::from_secs(1)))
        .await
        .is_ok();
    let key = state.verifier.ready();
    let status = if cp && key { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    // The route table is reported, not required: management works without it, and calls
    // keep working on the last table while the control plane is away.
    let table = state.routes.snapshot();
    let routes = json!({"received": state.routes.has_table(), "generation": table.generation, "apis": table.len()});
    // So is the access table (API keys answer 503 until it arrives) and the metering mode.
    let access = state.access.snapshot();
    let access = json!({"received": state.access.has_table(), "generation": access.generation,
        "keys": access.key_count(), "grants": access.grant_count()});
    let body = json!({"ready": cp && key, "control_plane": cp, "token_key": key, "routes": routes,
        "access": access, "metering": state.meter.mode()});
    (status, axum::Json(body))
}
