//! Souq's control plane: holds the state and makes every decision. It speaks gRPC only:
//! `Accounts`, `Apis`, `Market` and `Execute` for the edge on behalf of users, `Routes`
//! and `Metering` for the edge's data path, and `Registry` for the node agents.
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
mod identity;
pub mod leader;
pub mod mail;
pub mod market;
pub mod nodes;
pub mod outbox;
pub mod quotas;
mod services;
mod state;
#[cfg(test)]
mod testing;

use std::{sync::Arc, time::Duration};

use souq_proto::{
    accounts::accounts_server::AccountsServer, apis::apis_server::ApisServer, execute::execute_server::ExecuteServer,
    market::market_server::MarketServer, metering::metering_server::MeteringServer,
    registry::registry_server::RegistryServer, routes::routes_server::RoutesServer, tasks::Tasks,
};
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
    // Every service admits only its callers' role (mutual TLS); in plain text, only the
    // join token (agents' and edges' feeds) and the users' tokens stand guard.
    let tls = cfg.grpc_tls.clone();
    let (edges, agents) = (tls.only(identity::EDGES), tls.only(identity::AGENTS));
    let served = tls
        .server(tonic::transport::Server::builder())
        .map_err(Error::Internal)?
        .add_service(AccountsServer::with_interceptor(
            services::accounts::AccountsService { state: state.clone() },
            edges.clone(),
        ))
        .add_service(ApisServer::with_interceptor(services::apis::ApisService { state: state.clone() }, edges.clone()))
        .add_service(MarketServer::with_interceptor(
            services::market::MarketService { state: state.clone() },
            edges.clone(),
        ))
        .add_service(ExecuteServer::with_interceptor(
            services::execute::ExecuteService { state: state.clone() },
            edges.clone(),
        ))
        .add_service(RegistryServer::with_interceptor(services::registry::RegistryService { state: state.clone() }, agents))
        .add_service(RoutesServer::with_interceptor(services::routes::RoutesService { state: state.clone() }, edges.clone()))
        .add_service(souq_proto::nodes::nodes_server::NodesServer::with_interceptor(services::nodes::NodesService { state: state.clone(), admin_token: cfg.admin_token.clone() }, edges.clone()))
        .add_service(MeteringServer::with_interceptor(services::metering::MeteringService { state }, edges))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
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
    }
}
