//! What every handler shares: the control plane's clients over one lazily connected
//! channel, the followed route and access tables, the agents' clients, the limiter and
//! the meter.
use std::{sync::Arc, time::Duration};

use axum::extract::FromRef;
use souq_proto::{
    accounts::accounts_client::AccountsClient, agent_clients::AgentClients, apis::apis_client::ApisClient,
    execute::execute_client::ExecuteClient, market::market_client::MarketClient, nodes::nodes_client::NodesClient,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    access::AccessTable, config::Config, edge_id, followed::Followed, limit, meter, metrics::Metrics,
    route_table::RouteTable,
    upstream::agents::DIALING, verifier::Verifier,
};

/// Longest a Redis rate-limit decision may take before memory decides instead.
const LIMIT_TIMEOUT: Duration = Duration::from_millis(250);

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The control plane's `Accounts`: signup, login, sessions, passwords.
    pub accounts: AccountsClient<Channel>,
    /// The control plane's `Apis`: deployed APIs, versions, deployments, logs.
    pub apis: ApisClient<Channel>,
    /// The control plane's `Market`: plans, the marketplace, keys, usage.
    pub market: MarketClient<Channel>,
    /// The control plane's `Execute`: one-shot runs.
    pub execute: ExecuteClient<Channel>,
    /// The control plane's `Nodes`: operators' list, cordon, drain and uncordon.
    pub nodes: NodesClient<Channel>,
    /// Token verification.
    pub verifier: Arc<Verifier>,
    /// The data path's route table.
    pub routes: Arc<Followed<RouteTable>>,
    /// The data path's keys and subscriptions.
    pub access: Arc<Followed<AccessTable>>,
    /// Rate limits and quotas.
    pub limiter: Arc<limit::Limiter>,
    /// Usage metering; off when the config turns it off.
    pub meter: meter::Meter,
    /// The data path's agent clients.
    pub agents: Arc<AgentClients>,
    /// Largest body of a call to a deployed API.
    pub call_body_limit: usize,
    /// The edge's metrics.
    pub metrics: Arc<Metrics>,
    /// The registry `GET /metrics` answers with; `None` answers 404 there.
    pub exposition: Option<Arc<souq_proto::metrics::Registry>>,
    /// Cancelled at shutdown; ends long-lived responses (log follows) so the drain ends.
    pub shutdown: CancellationToken,
    /// The control plane's one channel, shared by every client of it.
    pub(crate) control_plane: Channel,
}

impl FromRef<AppState> for Arc<Verifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// A Redis connection that connects on first use, so the edge starts (and serves, in
/// memory) while Redis is down. The URL is never part of an error: it may hold a password.
fn redis_connection(url: &str) -> Result<redis::aio::ConnectionManager, String> {
    let client =
        redis::Client::open(url).map_err(|e| format!("--redis-url is not a valid Redis URL ({:?})", e.kind()))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    redis::aio::ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| format!("the Redis connection could not be set up ({:?})", e.kind()))
}

impl AppState {
    /// State around lazily connected clients; refuses a config that fails
    /// [`Config::validate`]. Connects to nothing yet.
    pub fn new(cfg: &Config, shutdown: CancellationToken) -> Result<Self, String> {
        cfg.validate()?;
        let edge_id = cfg.edge_id.clone().unwrap_or_else(|| edge_id::derive(&edge_id::hostname(), None));
        let redis = cfg.redis_url.as_deref().map(redis_connection).transpose()?;
        let (meter, limiter) = match (cfg.metering, redis) {
            (false, _) => (meter::Meter::off(), limit::Limiter::in_memory()),
            (true, None) => (meter::Meter::in_memory(), limit::Limiter::in_memory()),
            (true, Some(conn)) => {
                (meter::Meter::in_redis(conn.clone(), &edge_id), limit::Limiter::with_redis(conn, LIMIT_TIMEOUT))
            }
        };
        cfg.metrics.metering_backlog.set(meter.backlog_probe());
        let agents = AgentClients::new(&cfg.join_token, DIALING)?.with_transport(cfg.grpc_tls.clone());
        let channel = cfg
            .grpc_tls
            .endpoint(&cfg.control_plane_url, souq_proto::tls::Role::ControlPlane)
            .map_err(|e| format!("--control-plane-url: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            // Pings find a control plane that vanished or froze (a paused process still
            // holds its sockets open) within about 4 s: calls under way on that connection
            // then end in a definite error, and the next call connects again, through the
            // Service's name, to a replica that answers.
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .connect_lazy();
        Ok(AppState {
            accounts: AccountsClient::new(channel.clone()),
            apis: ApisClient::new(channel.clone()),
            market: MarketClient::new(channel.clone()),
            execute: ExecuteClient::new(channel.clone()),
            nodes: NodesClient::new(channel.clone()),
            verifier: Arc::default(),
            routes: Arc::new(Followed::with_receipt(cfg.metrics.route_table.clone())),
            access: Arc::new(Followed::with_receipt(cfg.metrics.access_table.clone())),
            limiter: Arc::new(limiter),
            meter,
            agents: Arc::new(agents),
            call_body_limit: cfg.call_body_limit,
            metrics: cfg.metrics.clone(),
            exposition: cfg.exposition.clone(),
            shutdown,
            control_plane: channel,
        })
    }
}
