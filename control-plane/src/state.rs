//! The services' shared state: the state of every area, built once from the config. Only
//! the service layer reads it; each area sees its own part alone.
use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    accounts::Accounts,
    auth::token::TokenSigner,
    config::Config,
    deploy::Deployer,
    leader::{self, Leadership},
    market::Market,
    metrics::Metrics,
    nodes::Nodes,
    quotas::{ExecuteRate, Quotas},
};

/// Every area's state, and what the services need besides.
pub(crate) struct State {
    /// The database, for the transactions that span areas (creating and deleting an API).
    pub(crate) db: DatabaseConnection,
    /// The secret agents and edges present.
    pub(crate) join_token: String,
    /// The wall timeout of an execute that names none.
    pub(crate) default_timeout: Duration,
    /// Signup, sessions and passwords.
    pub(crate) accounts: Arc<Accounts>,
    /// The node agents.
    pub(crate) nodes: Arc<Nodes>,
    /// Desired state, the reconciler and the route table.
    pub(crate) deployer: Arc<Deployer>,
    /// Whether this replica leads (and reconciles), and the highest epoch it has read.
    pub(crate) leadership: Arc<Leadership>,
    /// Plans, keys, subscriptions, usage and the access table.
    pub(crate) market: Arc<Market>,
    /// What one user may hold and start.
    pub(crate) quotas: Quotas,
    /// Executes started per user per minute.
    pub(crate) execute_rate: ExecuteRate,
    /// Cancelled when shutdown starts: the table streams to the edges end then, so the
    /// server's drain does not wait on them (the edges keep their last tables).
    pub(crate) draining: CancellationToken,
    /// The control plane's metrics.
    pub(crate) metrics: Arc<Metrics>,
}

impl State {
    /// Every area over a migrated database; queued mails wake `mail_wake`; `draining` is
    /// cancelled when shutdown starts.
    pub(crate) fn new(
        cfg: &Config,
        db: DatabaseConnection,
        tokens: TokenSigner,
        mail_wake: Arc<Notify>,
        draining: CancellationToken,
    ) -> State {
        let accounts = Accounts::new(db.clone(), cfg.clock.clone(), &cfg.public_url, tokens, mail_wake).with_limits(
            cfg.signup_limit,
            cfg.forgot_limit,
            cfg.audit_retention,
        );
        let nodes = Arc::new(
            Nodes::new(db.clone(), &cfg.join_token, cfg.heartbeat_interval, cfg.node_ttl).with_transport(cfg.grpc_tls.clone()),
        );
        let deployer =
            Deployer::new(db.clone(), nodes.clone(), cfg.default_timeout, cfg.max_replicas).with_metrics(cfg.metrics.clone());
        let market = Market::new(db.clone(), cfg.clock.clone());
        let leadership = Arc::new(Leadership::new(db.clone(), leader::holder_id()).with_metrics(cfg.metrics.clone()));
        State {
            db,
            join_token: cfg.join_token.clone(),
            default_timeout: cfg.default_timeout,
            accounts: Arc::new(accounts),
            nodes,
            deployer: Arc::new(deployer),
            leadership,
            market: Arc::new(market),
            quotas: cfg.quotas,
            execute_rate: ExecuteRate::new(cfg.quotas.executes_per_minute, cfg.clock.clone()),
            draining,
            metrics: cfg.metrics.clone(),
        }
    }
}
