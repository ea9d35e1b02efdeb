//! Souq's edge: the public REST face. It validates and authenticates requests, answers
//! errors as problem+json, and translates calls into the control plane's `Platform` gRPC.
#![forbid(unsafe_code)]

pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod verifier;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::StatusCode,
    routing::{get, post},
};
use souq_proto::platform::platform_client::PlatformClient;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::info;
use utoipa::OpenApi;

pub use error::{ApiError, Result};

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The edge's configuration, already validated by the caller.
#[derive(Debug, Clone)]
pub struct Config {
    /// The control plane's gRPC URL.
    pub control_plane_url: String,
    /// How often to fetch token revocations. A password change voids earlier tokens at
    /// the control plane at once, and at this edge within this time.
    pub revocation_poll: Duration,
}

impl Config {
    /// The defaults, around a control plane URL.
    pub fn new(control_plane_url: String) -> Self {
        Config { control_plane_url, revocation_poll: Duration::from_secs(10) }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The control plane.
    pub platform: PlatformClient<Channel>,
    /// Token verification.
    pub verifier: Arc<verifier::Verifier>,
}

impl AppState {
    /// State around a lazily connected control plane client.
    pub fn new(cfg: &Config) -> std::result::Result<Self, String> {
        let channel = Endpoint::from_shared(cfg.control_plane_url.clone())
            .map_err(|e| format!("control plane URL: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(AppState { platform: PlatformClient::new(channel), verifier: Arc::default() })
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed on this route")
}

/// The span of one request. The path is recorded with any token in it redacted, so
/// single-use links never reach the logs.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let path = req.uri().path();
    let path = match path.strip_prefix("/api/v1/auth/verify-email/") {
        Some(_) => "/api/v1/auth/verify-email/…",
        None => path,
    };
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %path, request_id = %id)
}

/// The whole REST router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/auth/signup", post(routes::auth::signup))
        .route("/api/v1/auth/login", post(routes::auth::login))
        .route("/api/v1/auth/me", get(routes::auth::me))
        .route("/api/v1/auth/refresh", post(routes::auth::refresh))
        .route("/api/v1/auth/verify-email/{token}", get(routes::auth::verify_email))
        .route("/api/v1/auth/forgot-password", post(routes::auth::forgot_password))
        .route("/api/v1/auth/reset-password", post(routes::auth::reset_password))
        .route("/api/v1/auth/change-password", post(routes::auth::change_password))
        .route("/reset-password", get(routes::pages::reset_password))
        .route("/api/v1/execute", post(routes::execute::execute))
        .route("/api/v1/openapi.json", get(|| async { axum::Json(openapi::ApiDoc::openapi()) }))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    api.layer(PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// Runs the edge on `listener` until `shutdown` is cancelled.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let state = AppState::new(&cfg).map_err(std::io::Error::other)?;
    let verifier = state.verifier.clone();
    let platform = state.platform.clone();
    let fetch_shutdown = shutdown.clone();
    let every = cfg.revocation_poll;
    tokio::spawn(async move {
        verifier.fetch(platform.clone(), fetch_shutdown.clone()).await;
        verifier.follow_revocations(platform, every, fetch_shutdown).await;
    });
    info!(addr = %listener.local_addr()?, "edge listening");
    axum::serve(listener, router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
