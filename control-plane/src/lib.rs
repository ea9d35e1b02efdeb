//! Souq's control plane: holds the state and makes every decision. It speaks gRPC only:
//! `Accounts`, `Apis`, `Market` and `Execute` for the edge on behalf of users, `Routes`
//! and `Metering` for the edge's data path, `Registry` for the node agents, `Nodes` for
//! operators, and `grpc.health.v1.Health` for probes. Every service is counted and timed
//! (`metrics`); the database gauges are refreshed every second on every replica.
//!
//! Each area is a slice of its own: `accounts`, `apis` (the neutral core of an API),
//! `deploy` and `market` (both built on `apis`, neither on the other), `execute` and
//! `nodes`. Only `services`, one module per gRPC service, crosses areas.
//!
//! Several replicas may run on one PostgreSQL database: `leader` elects the one that
//! reconciles, places and commands agents; every replica serves every service.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod apis;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod deploy;
pub mod entity;
pub mod error;
pub mod execute;
pub mod gauges;
mod grpc_metrics;
mod health;
mod identity;
pub mod leader;
pub mod mail;
pub mod market;
pub mod metrics;
pub mod nodes;
pub mod outbox;
pub mod quotas;
mod services;
mod state;
#[cfg(test)]
mod testing;

use std::{sync::Arc, time::Duration};

use souq_proto::{
    accounts::accounts_server::{self, AccountsServer},
    apis::apis_server::{self, ApisServer},
    execute::execute_server::{self, ExecuteServer},
    market::market_server::{self, MarketServer},
    metering::metering_server::{self, MeteringServer},
    nodes::nodes_server::{self, NodesServer},
    registry::registry_server::{self, RegistryServer},
    routes::routes_server::{self, RoutesServer},
    tasks::Tasks,
};
use tonic_health::ServingStatus;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError, MailConfig, Quotas};
pub use db::{connect, migrate};
pub use error::{Error, Result};

/// How long the background tasks (mail outbox, reconciler, access feed, agent-client
/// pruning) get to finish once the gRPC server has stopped; then they are aborted. Each
/// ends within a pass once told to; a mail send or an agent call cut short is retried by
/// the next start. Well inside the 10 s the `souq` binary gives a whole role to drain.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often every replica rebuilds the route and access tables it serves to edges from
/// the database, so edges connected to it see what other replicas changed.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The gRPC services the control plane serves, by name: the health service reports each.
pub const SERVICES: [&str; 8] = [
    accounts_server::SERVICE_NAME,
    apis_server::SERVICE_NAME,
    execute_server::SERVICE_NAME,
    market_server::SERVICE_NAME,
    metering_server::SERVICE_NAME,
    nodes_server::SERVICE_NAME,
    registry_server::SERVICE_NAME,
    routes_server::SERVICE_NAME,
];

/// Runs the control plane on `listener` until `shutdown` is cancelled: checks the config,
/// migrates the database, starts the background tasks and serves every gRPC service.
/// Once the server has stopped, the background tasks get [`SHUTDOWN_GRACE`] to end.
/// On SQLite, a second control plane on the same database file is refused.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    cfg.validate()?;
    // Held until `run` returns.
    let _sqlite_lock = db::lock_sqlite(&cfg.database_url)?;
    let db = connect(&cfg.database_url).await?;
    migrate(&db).await?;
    let tokens = auth::token::TokenSigner::load_or_create(&cfg.signing_key_path, cfg.access_token_ttl)?;
    let mailer = match &cfg.mail {
        MailConfig::Smtp(url) => mail::Mailer::smtp(url, &cfg.mail_from),
        MailConfig::Files(dir) => mail::Mailer::file(dir, &cfg.mail_from),
    }
    .map_err(|e| Error::Internal(e.to_string()))?;
    if let MailConfig::Files(dir) = &cfg.mail {
        info!(dir = %dir.display(), "no SMTP server configured: mail is written as .eml files");
    }
    let mail_wake = Arc::new(tokio::sync::Notify::new());
    let state = Arc::new(state::State::new(&cfg, db, tokens, mail_wake.clone(), shutdown.clone()));
    // Edges that connect get the tables from the database at once, never an empty
    // placeholder in their place.
    deploy::routes::refresh(&state.deployer).await?;
    market::access::refresh(&state.market).await?;

    // Most background tasks watch a token of their own, cancelled only once the server
    // has stopped: requests still being answered meanwhile need them (a signup's mail, the
    // access rebuild after a usage report). The reconciler stops as soon as shutdown
    // starts: agents' heartbeats no longer arrive then, and it must not take their
    // silence for dead nodes and publish routes without them. The lease is released then
    // too, so another replica takes over without waiting for it to expire; the
    // reconciler runs only while this replica leads.
    let mut tasks = Tasks::new(CancellationToken::new());
    let token = tasks.token();
    tasks.spawn("password hashing warm-up", async {
        let _ = tokio::task::spawn_blocking(auth::password::warm_up).await;
    });
    tasks.spawn("mail outbox", outbox::run(state.db.clone(), Arc::new(mailer), cfg.clock.clone(), mail_wake, token.clone()));
    tasks.spawn("leader lease", state.leadership.clone().run(shutdown.child_token()));
    tasks.spawn(
        "reconciler",
        deploy::reconciler::run(state.deployer.clone(), state.leadership.clone(), shutdown.child_token()),
    );
    tasks.spawn("tables from the database", follow_tables(state.clone(), token.clone()));
    tasks.spawn("access feed", market::access::run(state.market.clone(), token.clone()));
    tasks.spawn("accounts upkeep", accounts::upkeep::run(state.accounts.clone(), token.clone()));
    tasks.spawn("agent client pruning", nodes::agents::forget_gone(state.nodes.clone(), token));

    let addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    info!(%addr, "control plane listening");
    health::set_all(&cfg.health, &SERVICES, ServingStatus::Serving).await;
    // Every service admits only its callers' role (mutual TLS); in plain text, only the
    // join token (agents' and edges' feeds) and the users' tokens stand guard. Health
    // answers any caller the transport admits. Each service is counted and timed.
    let tls = cfg.grpc_tls.clone();
    let (edges, agents) = (tls.only(identity::EDGES), tls.only(identity::AGENTS));
    let meter = grpc_metrics::Meter::new(cfg.metrics.clone());
    let (st, admin_token) = (&state, cfg.admin_token.clone());
    let served = tls
        .server(tonic::transport::Server::builder())
        .map_err(Error::Internal)?
        .layer(souq_proto::grpc_server_traces!())
        .add_service(meter.wrap(health::server(&cfg.health, shutdown.clone())))
        .add_service(meter.wrap(AccountsServer::with_interceptor(
            services::accounts::AccountsService { state: st.clone() },
            edges.clone(),
        )))
        .add_service(meter.wrap(ApisServer::with_interceptor(services::apis::ApisService { state: st.clone() }, edges.clone())))
        .add_service(meter.wrap(MarketServer::with_interceptor(
            services::market::MarketService { state: st.clone() },
            edges.clone(),
        )))
        .add_service(meter.wrap(ExecuteServer::with_interceptor(
            services::execute::ExecuteService { state: st.clone() },
            edges.clone(),
        )))
        .add_service(meter.wrap(RegistryServer::with_interceptor(
            services::registry::RegistryService { state: st.clone() },
            agents,
        )))
        .add_service(meter.wrap(RoutesServer::with_interceptor(
            services::routes::RoutesService { state: st.clone() },
            edges.clone(),
        )))
        .add_service(meter.wrap(NodesServer::with_interceptor(
            services::nodes::NodesService { state: st.clone(), admin_token },
            edges.clone(),
        )))
        .add_service(meter.wrap(MeteringServer::with_interceptor(
            services::metering::MeteringService { state: st.clone() },
            edges,
        )))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            shutdown.cancelled().await;
            health::set_all(&cfg.health, &SERVICES, ServingStatus::NotServing).await;
        })
        .await;
    tasks.shutdown(SHUTDOWN_GRACE).await;
    served.map_err(|e| Error::Internal(format!("grpc server: {e}")))
}

/// Rebuilds the route and access tables from the database every [`FOLLOW_EVERY`] until
/// `shutdown`: another replica may have placed instances or changed keys.
async fn follow_tables(state: Arc<state::State>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
        if let Err(e) = deploy::routes::refresh(&state.deployer).await {
            tracing::warn!(error = %e, "could not rebuild the route table");
        }
        if let Err(e) = market::access::refresh(&state.market).await {
            tracing::warn!(error = %e, "could not rebuild the access table");
        }
        if let Err(e) = gauges::refresh(&state.db, &state.metrics, chrono::Utc::now(), state.nodes.node_ttl).await {
            state.metrics.gauge_refresh_errors.inc();
            tracing::warn!(error = %e, "could not refresh the gauges from the database");
        }
    }
}

