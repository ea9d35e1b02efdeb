//! Souq's control plane: holds the state and makes every decision. It speaks gRPC only:
//! `Platform` and `Routes` for the edge, `Registry` for the node agents.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod deploy;
pub mod edges;
pub mod entity;
pub mod error;
pub mod execute;
pub mod mail;
pub mod market;
pub mod outbox;
pub mod platform;
pub mod registry;
pub mod scheduler;
#[cfg(test)]
mod testing;

use std::{path::PathBuf, sync::Arc, time::Duration};

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use souq_proto::{
    platform::platform_server::PlatformServer, registry::registry_server::RegistryServer,
    routes::{RouteTable, routes_server::RoutesServer},
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};

/// The control plane's configuration, already validated by the caller.
#[derive(Clone)]
pub struct Config {
    /// `sqlite://…?mode=rwc` or `postgres://…`.
    pub database_url: String,
    /// Where the Ed25519 token-signing key lives (made on first start).
    pub signing_key_path: PathBuf,
    /// The secret agents present to register.
    pub join_token: String,
    /// How long an access token lives.
    pub access_token_ttl: Duration,
    /// How often agents heartbeat.
    pub heartbeat_interval: Duration,
    /// A node that has not heartbeated for this long takes no work.
    pub node_ttl: Duration,
    /// The wall timeout of an execute that names none.
    pub default_timeout: Duration,
    /// The public URL of the edge; links in mails are built from it.
    pub public_url: String,
    /// Where mail goes.
    pub mail: MailConfig,
    /// The `From` of every mail, e.g. `Souq <no-reply@example.com>`.
    pub mail_from: String,
    /// The time source.
    pub clock: Arc<dyn clock::Clock>,
    /// Most replicas one deployment may ask for.
    pub max_replicas: u32,
}

/// Where the control plane sends mail.
#[derive(Clone)]
pub enum MailConfig {
    /// An SMTP server: `smtp://…`, `smtps://…` (may hold a password; never logged).
    Smtp(String),
    /// `.eml` files in a directory.
    Files(PathBuf),
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("signing_key_path", &self.signing_key_path)
            .field("access_token_ttl", &self.access_token_ttl)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults suited to `souq up`, around the given database and key file.
    /// Mail goes to files in `mail_dir` until [`Config::mail`] says otherwise.
    pub fn new(database_url: String, signing_key_path: PathBuf, join_token: String, public_url: String, mail_dir: PathBuf) -> Self {
        Config {
            database_url,
            signing_key_path,
            join_token,
            access_token_ttl: Duration::from_secs(15 * 60),
            heartbeat_interval: Duration::from_secs(5),
            node_ttl: Duration::from_secs(15),
            default_timeout: Duration::from_secs(30),
            public_url,
            mail: MailConfig::Files(mail_dir),
            mail_from: "Souq <no-reply@localhost>".into(),
            clock: Arc::new(clock::SystemClock),
            max_replicas: 8,
        }
    }
}

/// Shared state of the services.
pub(crate) struct State {
    pub(crate) db: DatabaseConnection,
    pub(crate) clock: Arc<dyn clock::Clock>,
    pub(crate) public_url: String,
    pub(crate) mail_wake: Arc<tokio::sync::Notify>,
    pub(crate) account_throttle: auth::throttle::Throttle,
    pub(crate) ip_throttle: auth::throttle::Throttle,
    pub(crate) tokens: auth::token::TokenSigner,
    pub(crate) join_token: String,
    pub(crate) agents: agents::AgentClients,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) node_ttl: Duration,
    pub(crate) default_timeout: Duration,
    pub(crate) max_replicas: u32,
    /// Wakes the reconciler.
    pub(crate) reconcile: tokio::sync::Notify,
    /// The route table the edges watch.
    pub(crate) routes: tokio::sync::watch::Sender<Arc<RouteTable>>,
    /// The access table the edges watch: keys and grants.
    pub(crate) access: market::access::AccessFeed,
    /// Instances with a Deploy or Stop call to their agent under way.
    pub(crate) calls: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl State {
    /// The services' state over a migrated database.
    fn new(cfg: &Config, db: DatabaseConnection, tokens: auth::token::TokenSigner, mail_wake: Arc<tokio::sync::Notify>) -> State {
        let minute = Duration::from_secs(60);
        State {
            db,
            clock: cfg.clock.clone(),
            public_url: cfg.public_url.trim_end_matches('/').to_owned(),
            mail_wake,
            account_throttle: auth::throttle::Throttle::new(5, 15 * minute, minute, 15 * minute),
            ip_throttle: auth::throttle::Throttle::new(50, 15 * minute, minute, 15 * minute),
            tokens,
            agents: agents::AgentClients::new(&cfg.join_token),
            join_token: cfg.join_token.clone(),
            heartbeat_interval: cfg.heartbeat_interval,
            node_ttl: cfg.node_ttl,
            default_timeout: cfg.default_timeout,
            max_replicas: cfg.max_replicas,
            reconcile: tokio::sync::Notify::new(),
            routes: tokio::sync::watch::Sender::new(Arc::new(RouteTable::default())),
            access: market::access::AccessFeed::new(),
            calls: std::sync::Mutex::default(),
        }
    }

    /// Asks the reconciler for a pass soon.
    pub(crate) fn wake(&self) {
        self.reconcile.notify_one();
    }

    /// Claims instance `id` for one agent call; false if a call for it is under way.
    pub(crate) fn begin_call(&self, id: &str) -> bool {
        self.calls.lock().is_ok_and(|mut c| c.insert(id.to_owned()))
    }

    /// Ends the call claimed by `begin_call`.
    pub(crate) fn end_call(&self, id: &str) {
        if let Ok(mut c) = self.calls.lock() {
            c.remove(id);
        }
    }
}

/// Connects to the database; never logs the URL, which may hold a password.
pub async fn connect(database_url: &str) -> Result<DatabaseConnection> {
    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
    let mut opts = ConnectOptions::new(database_url.to_owned());
    // SQLite has one writer at a time, and a WAL transaction that reads and then writes
    // fails at once (SQLITE_BUSY_SNAPSHOT) if another connection wrote in between; one
    // connection serialises the control plane's work on it instead.
    let connections = if database_url.starts_with("sqlite:") { 1 } else { 16 };
    opts.max_connections(connections).connect_timeout(Duration::from_secs(10)).sqlx_logging(false);
    // SQLite (the embedded default): write-ahead logging, so readers never wait for the
    // writer, and fsync at checkpoints rather than on every commit. A crash of Souq loses
    // nothing; a power cut may lose the last commits.
    opts.map_sqlx_sqlite_opts(|o| {
        o.journal_mode(SqliteJournalMode::Wal).synchronous(SqliteSynchronous::Normal).busy_timeout(Duration::from_secs(10))
    });
    Ok(Database::connect(opts).await?)
}

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<()> {
    souq_migrations::Migrator::up(db, None).await?;
    Ok(())
}

/// Runs the control plane on `listener` until `shutdown` is cancelled.
pub async fn run(cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
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
    tokio::task::spawn_blocking(auth::password::warm_up);
    let mail_wake = Arc::new(tokio::sync::Notify::new());
    let state = Arc::new(State::new(&cfg, db, tokens, mail_wake.clone()));
    tokio::spawn(outbox::run(state.db.clone(), Arc::new(mailer), cfg.clock.clone(), mail_wake, shutdown.clone()));
    // Edges that connect get the routes from the database at once, never an empty
    // placeholder in their place.
    deploy::routes::refresh(&state).await?;
    market::access::refresh(&state).await?;
    tokio::spawn(deploy::reconciler::run(state.clone(), shutdown.clone()));
    tokio::spawn(market::access::run(state.clone(), shutdown.clone()));
    let addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    info!(%addr, "control plane listening");
    tonic::transport::Server::builder()
        .add_service(PlatformServer::new(platform::PlatformService { state: state.clone() }))
        .add_service(RegistryServer::new(registry::RegistryService { state: state.clone() }))
        .add_service(RoutesServer::new(edges::RoutesService { state }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled())
        .await
        .map_err(|e| Error::Internal(format!("grpc server: {e}")))
}
