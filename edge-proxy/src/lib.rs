//! Souq's edge: the public REST face. It validates and authenticates requests, answers
//! errors as problem+json, and translates calls into the control plane's `Platform` gRPC.
//! Calls to deployed APIs take the data path: the route table the control plane streams,
//! then straight to the agent that hosts an instance.
#![forbid(unsafe_code)]

pub mod access;
pub mod call;
pub mod edge_id;
pub mod error;
pub mod extract;
pub mod limit;
pub mod meter;
pub mod openapi;
pub mod routes;
pub mod routing;
pub mod token_cache;
pub mod verifier;

#[cfg(test)]
mod redis_tests;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::StatusCode,
    routing::{any, delete, get, post, put},
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

/// Default largest body of a call to a deployed API, in bytes.
pub const DEFAULT_CALL_BODY_LIMIT: usize = 1024 * 1024;
/// Largest `call_body_limit` allowed: base64 of a binary body grows it by a third, and
/// the event must stay within the agents' 4 MiB gRPC message limit.
pub const MAX_CALL_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The edge's configuration, already validated by the caller.
#[derive(Clone)]
pub struct Config {
    /// The control plane's gRPC URL (it serves `Platform` and `Routes`).
    pub control_plane_url: String,
    /// The cluster secret, presented to the control plane's `Routes` and to the agents.
    pub join_token: String,
    /// How often to fetch token revocations. A password change voids earlier tokens at
    /// the control plane at once, and at this edge within this time.
    pub revocation_poll: Duration,
    /// Largest body of a call to a deployed API, in bytes (413 beyond); at most
    /// [`MAX_CALL_BODY_LIMIT`].
    pub call_body_limit: usize,
    /// Redis for rate limits, quotas and the durable metering stream; in memory when
    /// `None` (the embedded default: a crash loses up to a second of unflushed usage).
    pub redis_url: Option<String>,
    /// This edge's name: its metering stream is `souq:usage:<edge_id>`, and an edge
    /// started again with the same id flushes what the last one left. Unique per live
    /// edge; `None` derives `<hostname>-<listen address>`.
    pub edge_id: Option<String>,
    /// Meter every call and execute, and apply plans' rate limits and quotas. Off only to
    /// measure what they cost.
    pub metering: bool,
    /// How often usage is reported to the control plane (sooner when 1000 events wait).
    pub flush_interval: Duration,
    /// TEST HOOK: fault injection into the usage flusher; inert unless armed.
    pub flush_faults: Arc<meter::flush::FlushFaults>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("control_plane_url", &self.control_plane_url)
            .field("join_token", &"<redacted>")
            .field("revocation_poll", &self.revocation_poll)
            .field("call_body_limit", &self.call_body_limit)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("edge_id", &self.edge_id)
            .field("metering", &self.metering)
            .field("flush_interval", &self.flush_interval)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults, around a control plane URL and the cluster's join token.
    pub fn new(control_plane_url: String, join_token: String) -> Self {
        Config {
            control_plane_url,
            join_token,
            revocation_poll: Duration::from_secs(10),
            call_body_limit: DEFAULT_CALL_BODY_LIMIT,
            redis_url: None,
            edge_id: None,
            metering: true,
            flush_interval: Duration::from_secs(1),
            flush_faults: Arc::default(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The control plane.
    pub platform: PlatformClient<Channel>,
    /// Token verification.
    pub verifier: Arc<verifier::Verifier>,
    /// The data path's route table.
    pub routing: Arc<routing::Routing>,
    /// The data path's keys and subscriptions.
    pub access: Arc<access::Access>,
    /// Rate limits and quotas.
    pub limiter: Arc<limit::Limiter>,
    /// Usage metering; off when the config turns it off.
    pub meter: meter::Meter,
    /// The data path's agent clients.
    pub agents: Arc<call::agents::AgentClients>,
    /// Largest body of a call to a deployed API.
    pub call_body_limit: usize,
    /// Cancelled at shutdown; ends long-lived responses (log follows) so the drain ends.
    pub shutdown: CancellationToken,
    /// The control plane's channel, shared by `Platform` and `Routes`.
    control_plane: Channel,
}

/// Longest a Redis rate-limit decision may take before memory decides instead.
const LIMIT_TIMEOUT: Duration = Duration::from_millis(250);

/// A Redis connection that connects on first use, so the edge starts (and serves, in
/// memory) while Redis is down. The URL is never part of an error: it may hold a password.
fn redis_connection(url: &str) -> std::result::Result<redis::aio::ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| format!("the Redis URL is not valid ({:?})", e.kind()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    redis::aio::ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| format!("the Redis connection could not be set up ({:?})", e.kind()))
}

impl AppState {
    /// State around a lazily connected control plane client; refuses a bad config.
    pub fn new(cfg: &Config, shutdown: CancellationToken) -> std::result::Result<Self, String> {
        if cfg.join_token.is_empty() {
            return Err("the join token must not be empty".into());
        }
        if !(1..=MAX_CALL_BODY_LIMIT).contains(&cfg.call_body_limit) {
            return Err(format!("the call body limit must be 1 to {MAX_CALL_BODY_LIMIT} bytes"));
        }
        if cfg.flush_interval.is_zero() || cfg.flush_interval > Duration::from_secs(60) {
            return Err("the usage flush interval must be more than 0 and at most 60 s".into());
        }
        let edge_id = match &cfg.edge_id {
            Some(id) => {
                edge_id::validate(id)?;
                id.clone()
            }
            None => edge_id::derive(&edge_id::hostname(), None),
        };
        let redis = cfg.redis_url.as_deref().map(redis_connection).transpose()?;
        let (meter, limiter) = match (cfg.metering, redis) {
            (false, _) => (meter::Meter::off(), limit::Limiter::in_memory()),
            (true, None) => (meter::Meter::in_memory(), limit::Limiter::in_memory()),
            (true, Some(conn)) => {
                (meter::Meter::in_redis(conn.clone(), &edge_id), limit::Limiter::with_redis(conn, LIMIT_TIMEOUT))
            }
        };
        let agents = call::agents::AgentClients::new(&cfg.join_token)?;
        let channel = Endpoint::from_shared(cfg.control_plane_url.clone())
            .map_err(|e| format!("control plane URL: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            // Pings find a control plane that vanished under an open route stream.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(AppState {
            platform: PlatformClient::new(channel.clone()),
            verifier: Arc::default(),
            routing: Arc::default(),
            access: Arc::default(),
            limiter: Arc::new(limiter),
            meter,
            agents: Arc::new(agents),
            call_body_limit: cfg.call_body_limit,
            shutdown,
            control_plane: channel,
        })
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
    let calls = Router::new()
        .route("/call/{slug}", any(routes::call::call))
        .route("/call/{slug}/", any(routes::call::call))
        .route("/call/{slug}/{*path}", any(routes::call::call))
        .layer(DefaultBodyLimit::max(state.call_body_limit));
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
        .route("/api/v1/apis", post(routes::apis::create).get(routes::apis::list))
        .route("/api/v1/apis/{id}", get(routes::apis::get).patch(routes::apis::update).delete(routes::apis::delete))
        .route("/api/v1/apis/{id}/plans", post(routes::plans::create).get(routes::plans::list))
        .route("/api/v1/apis/{id}/usage", get(routes::usage::api_usage))
        .route("/api/v1/keys", post(routes::keys::create).get(routes::keys::list))
        .route("/api/v1/keys/{id}", delete(routes::keys::revoke))
        .route("/api/v1/marketplace", get(routes::marketplace::list))
        .route("/api/v1/marketplace/{slug}/subscribe", post(routes::marketplace::subscribe))
        .route("/api/v1/usage", get(routes::usage::my_usage))
        .route("/api/v1/usage/statement", get(routes::usage::statement))
        .route("/api/v1/apis/{id}/code", put(routes::apis::put_code))
        .route("/api/v1/apis/{id}/versions", get(routes::apis::versions))
        .route("/api/v1/apis/{id}/deploy", post(routes::apis::deploy))
        .route("/api/v1/apis/{id}/stop", post(routes::apis::stop))
        .route("/api/v1/apis/{id}/status", get(routes::apis::status))
        .route("/api/v1/apis/{id}/logs", get(routes::logs::logs))
        .route("/api/v1/openapi.json", get(|| async { axum::Json(openapi::ApiDoc::openapi()) }))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(calls)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    api.layer(PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// A background task that is aborted when dropped, so an edge whose `run` is dropped
/// (a crash, in tests) leaves nothing running behind it.
struct Task(tokio::task::JoinHandle<()>);

impl Task {
    fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Task(tokio::spawn(f))
    }

    /// Waits for the task to end, at most `patience`.
    async fn join(mut self, patience: Duration) {
        let _ = tokio::time::timeout(patience, &mut self.0).await;
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long the metering writer and flusher get after the last request, at shutdown.
const METER_DRAIN: Duration = Duration::from_secs(5);

/// Runs the edge on `listener` until `shutdown` is cancelled. After the last request, the
/// metering writer hands its last events to Redis and the flusher reports once more.
pub async fn run(mut cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let edge_id = cfg.edge_id.get_or_insert_with(|| edge_id::derive(&edge_id::hostname(), Some(addr))).clone();
    let state = AppState::new(&cfg, shutdown.clone()).map_err(std::io::Error::other)?;
    let verifier = state.verifier.clone();
    let platform = state.platform.clone();
    let fetch_shutdown = shutdown.clone();
    let every = cfg.revocation_poll;
    let _verifier = Task::spawn(async move {
        verifier.fetch(platform.clone(), fetch_shutdown.clone()).await;
        verifier.follow_revocations(platform, every, fetch_shutdown).await;
    });
    let _routes = Task::spawn(routing::watch::follow(
        state.routing.clone(),
        state.agents.clone(),
        state.control_plane.clone(),
        cfg.join_token.clone(),
        shutdown.clone(),
    ));
    let _access = Task::spawn(access::watch::follow(
        state.access.clone(),
        state.control_plane.clone(),
        cfg.join_token.clone(),
        shutdown.clone(),
    ));
    // The writer ends once no request can submit any more; the flusher after it.
    let (drained, flush_stop) = (CancellationToken::new(), CancellationToken::new());
    let writer = state.meter.redis_writer(drained.clone()).map(Task::spawn);
    let flusher = state.meter.shared().map(|shared| {
        let flusher = meter::flush::Flusher {
            shared: shared.clone(),
            routes: souq_proto::routes::routes_client::RoutesClient::new(state.control_plane.clone()),
            join_token: cfg.join_token.clone(),
            interval: cfg.flush_interval,
            faults: cfg.flush_faults.clone(),
        };
        Task::spawn(flusher.supervise(flush_stop.clone()))
    });
    info!(addr = %addr, edge_id = %edge_id, metering = state.meter.mode(), "edge listening");
    let served = axum::serve(listener, router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    drained.cancel();
    if let Some(w) = writer {
        w.join(METER_DRAIN).await;
    }
    flush_stop.cancel();
    if let Some(f) = flusher {
        f.join(METER_DRAIN).await;
    }
    served
}
