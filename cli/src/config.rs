//! Command-line and environment configuration of every role, validated before any port
//! is bound. A bad value exits with status 64 and names the option.
use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use souq_node_agent::{Limits, PoolConfig};
use souq_proto::tls::{Role, Transport};
use tracing::warn;

/// Souq: API hosting, execution and marketplace.
#[derive(Debug, Parser)]
#[command(name = "souq", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// All in one process: control plane, one node agent and the edge, with SQLite in the data dir.
    Up(UpArgs),
    /// The control plane (gRPC).
    ControlPlane(ControlPlaneArgs),
    /// A node agent: runs sandboxes on this host's Docker Engine.
    Agent(AgentArgs),
    /// The public REST edge.
    Edge(EdgeArgs),
    /// Apply the database migrations and exit.
    Migrate(DbArgs),
    /// Issue a certificate for a role's internal gRPC links, from a CA made on first use.
    Certs(CertsArgs),
    /// Operators' hold on the nodes, through the edge: list, cordon, drain, uncordon.
    Node(NodeArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Execute latency and throughput through the whole stack, against `docker run --rm`.
    Execute(crate::bench::execute::BenchArgs),
    /// A deployed API through the data path: warm latency, throughput, deploy to first call.
    Invoke(crate::bench::invoke::InvokeArgs),
    /// The throughput cost of metering and rate limiting: off, in memory, and in Redis.
    Metering(crate::bench::metering::MeteringArgs),
    /// Bursts of wrong-password logins: guesses evaluated per account, and peak memory.
    Logins(crate::bench::logins::LoginsArgs),
}

/// A configuration error: the option and what is wrong with it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::error::Error for ConfigError {}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(option: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid value for {option}: {why}"))
}

/// Where state lives.
#[derive(Debug, Args, Clone)]
pub struct DbArgs {
    /// Directory for the SQLite database, keys and runtime sources.
    #[arg(long, env = "SOUQ_DATA_DIR", default_value = ".souq")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…); SQLite in the data dir when unset.
    #[arg(long, env = "SOUQ_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DbArgs {
    /// The database URL to connect to.
    pub fn url(&self) -> Result<String, ConfigError> {
        match &self.database_url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") || u.starts_with("sqlite:") => Ok(u.clone()),
            // Never echo the value: it may hold a password.
            Some(_) => Err(bad("--database-url", "must start with postgres://, postgresql:// or sqlite:")),
            None => Ok(format!("sqlite://{}?mode=rwc", self.data_dir.join("souq.db").display())),
        }
    }

    /// Creates the data dir.
    pub fn prepare(&self) -> Result<(), ConfigError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|e| bad("--data-dir", format!("{}: {e}", self.data_dir.display())))
    }
}

/// Mail and the links in it.
#[derive(Debug, Args, Clone)]
pub struct MailArgs {
    /// SMTP server: smtp://user:pass@host:587?tls=required (STARTTLS), smtps://user:pass@host (TLS), or
    /// smtp://host:25 (plain). Without it, mail is written as .eml files under <data-dir>/mail/.
    #[arg(long, env = "SOUQ_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The From of every mail.
    #[arg(long, env = "SOUQ_MAIL_FROM", default_value = "Souq <no-reply@localhost>")]
    pub mail_from: String,
    /// The edge's public URL, e.g. https://api.example.com; links in mail are built from it.
    #[arg(long, env = "SOUQ_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub accounts: AccountLimitArgs,
}

/// Limits on the anonymous writes that send mail (signup, forgotten passwords), and how
/// long the audit log keeps its rows; the control plane's `Config::validate` checks them.
#[derive(Debug, Args, Clone)]
pub struct AccountLimitArgs {
    /// Most signups one client address may make an hour (429 with Retry-After beyond).
    #[arg(long, env = "SOUQ_SIGNUP_PER_CLIENT_PER_HOUR", default_value_t = souq_control_plane::accounts::SIGNUP_LIMIT.per_client)]
    pub signup_per_client_per_hour: u32,
    /// Most signups from all clients together an hour.
    #[arg(long, env = "SOUQ_SIGNUPS_PER_HOUR", default_value_t = souq_control_plane::accounts::SIGNUP_LIMIT.global)]
    pub signups_per_hour: u32,
    /// Most forgotten-password requests one client address may make an hour.
    #[arg(long, env = "SOUQ_FORGOT_PER_CLIENT_PER_HOUR", default_value_t = souq_control_plane::accounts::FORGOT_LIMIT.per_client)]
    pub forgot_per_client_per_hour: u32,
    /// Most forgotten-password requests from all clients together an hour.
    #[arg(long, env = "SOUQ_FORGOTS_PER_HOUR", default_value_t = souq_control_plane::accounts::FORGOT_LIMIT.global)]
    pub forgots_per_hour: u32,
    /// Days the audit log keeps a row; older rows are deleted hourly.
    #[arg(long, env = "SOUQ_AUDIT_RETENTION_DAYS", default_value_t = souq_control_plane::accounts::AUDIT_RETENTION.as_secs() / 86_400)]
    pub audit_retention_days: u64,
}

impl AccountLimitArgs {
    /// Sets the limits and the retention on a control plane's configuration.
    pub fn apply(&self, cfg: &mut souq_control_plane::Config) {
        use souq_control_plane::config::RateConfig;
        cfg.signup_limit = RateConfig::per_hour(self.signup_per_client_per_hour, self.signups_per_hour);
        cfg.forgot_limit = RateConfig::per_hour(self.forgot_per_client_per_hour, self.forgots_per_hour);
        cfg.audit_retention = std::time::Duration::from_secs(self.audit_retention_days.saturating_mul(86_400));
    }
}

impl MailArgs {
    /// A control plane's configuration from these options and the database's, checked by
    /// its `Config::validate` (which never echoes the SMTP or database URL).
    pub fn control_plane_config(
        &self,
        db: &DbArgs,
        signing_key: PathBuf,
        join_token: String,
        public_url: String,
        max_replicas: u32,
    ) -> Result<souq_control_plane::Config, ConfigError> {
        let mut cfg = souq_control_plane::Config::new(db.url()?, signing_key, join_token, public_url, db.data_dir.join("mail"));
        if let Some(u) = &self.smtp_url {
            cfg.mail = souq_control_plane::MailConfig::Smtp(u.clone());
        }
        cfg.mail_from = self.mail_from.clone();
        cfg.max_replicas = max_replicas;
        self.accounts.apply(&mut cfg);
        cfg.validate().map_err(|e| ConfigError(e.to_string()))?;
        Ok(cfg)
    }
}

/// What one user may hold and start; the control plane's `Config::validate` checks them.
#[derive(Debug, Args, Clone)]
pub struct QuotaArgs {
    /// Most APIs one user may own.
    #[arg(long, env = "SOUQ_QUOTA_APIS", default_value_t = souq_control_plane::Quotas::DEFAULT.apis)]
    pub quota_apis: u32,
    /// Most replicas one user's running deployments may ask for in total.
    #[arg(long, env = "SOUQ_QUOTA_REPLICAS", default_value_t = souq_control_plane::Quotas::DEFAULT.replicas)]
    pub quota_replicas: u32,
    /// Most instance memory one user's running deployments may reserve in total, in MiB
    /// (replicas × the sandbox memory a node reserves per instance).
    #[arg(long, env = "SOUQ_QUOTA_INSTANCE_MEMORY_MB", default_value_t = souq_control_plane::Quotas::DEFAULT.instance_memory_mb)]
    pub quota_instance_memory_mb: u64,
    /// Most versions one API keeps (at least 2); the oldest that no deployment uses are deleted.
    #[arg(long, env = "SOUQ_QUOTA_VERSIONS_PER_API", default_value_t = souq_control_plane::Quotas::DEFAULT.versions_per_api)]
    pub quota_versions_per_api: u32,
    /// Most executes one user may start a minute (429 with Retry-After past it).
    #[arg(long, env = "SOUQ_QUOTA_EXECUTES_PER_MINUTE", default_value_t = souq_control_plane::Quotas::DEFAULT.executes_per_minute)]
    pub quota_executes_per_minute: u32,
}

impl QuotaArgs {
    /// Applies the quotas to a control plane's configuration and checks it again.
    pub fn apply(&self, cfg: &mut souq_control_plane::Config) -> Result<(), ConfigError> {
        cfg.quotas = souq_control_plane::Quotas {
            apis: self.quota_apis,
            replicas: self.quota_replicas,
            instance_memory_mb: self.quota_instance_memory_mb,
            versions_per_api: self.quota_versions_per_api,
            executes_per_minute: self.quota_executes_per_minute,
        };
        cfg.validate().map_err(|e| ConfigError(e.to_string()))
    }
}

/// Metering and rate limits at the edge.
#[derive(Debug, Args, Clone)]
pub struct MeterArgs {
    /// Redis for rate limits and metering, e.g. redis://127.0.0.1:6379 (may hold a
    /// password; never logged); in memory when unset, which loses unflushed usage on a crash.
    #[arg(long, env = "SOUQ_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// `on`, or `off` for benchmarks only: calls then go unmetered and unlimited.
    #[arg(long, env = "SOUQ_METERING", default_value = "on")]
    pub metering: String,
}

impl MeterArgs {
    /// Applies the options to an edge's configuration, checking them.
    pub fn apply(&self, cfg: &mut souq_edge_proxy::Config) -> Result<(), ConfigError> {
        cfg.metering = match self.metering.as_str() {
            "on" => true,
            "off" => false,
            _ => return Err(bad("--metering", "must be on or off")),
        };
        // The edge's `Config::validate` checks the URL.
        cfg.redis_url.clone_from(&self.redis_url);
        Ok(())
    }
}

/// How long the edge waits on slow clients, and how many it holds at once.
#[derive(Debug, Args, Clone)]
pub struct EdgeLimitArgs {
    /// Longest a client may take to send a request's headers, in seconds; the connection
    /// is closed past it.
    #[arg(long, env = "SOUQ_HEADER_READ_TIMEOUT_S", default_value_t = souq_edge_proxy::config::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    pub header_read_timeout_s: u64,
    /// Longest a request body may go without sending data, in seconds (answers, log
    /// follows and calls are not limited by it).
    #[arg(long, env = "SOUQ_BODY_READ_TIMEOUT_S", default_value_t = souq_edge_proxy::config::DEFAULT_BODY_READ_TIMEOUT.as_secs())]
    pub body_read_timeout_s: u64,
    /// Most connections the edge holds open; more wait in the listen backlog.
    #[arg(long, env = "SOUQ_MAX_CONNECTIONS", default_value_t = souq_edge_proxy::config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Longest a response may wait on a client that reads nothing, in seconds; the
    /// connection is then closed (a quiet log follow, with nothing to send, is not cut).
    #[arg(long, env = "SOUQ_WRITE_TIMEOUT_S", default_value_t = souq_edge_proxy::config::DEFAULT_WRITE_TIMEOUT.as_secs())]
    pub write_timeout_s: u64,
    /// Proxies in front of the edge, as addresses or CIDRs (10.0.0.0/8,2001:db8::/32):
    /// only from these peers is X-Forwarded-For believed, its right-most untrusted hop
    /// being the client. Unset: the TCP peer is the client.
    #[arg(long, env = "SOUQ_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (with --edge-tls-key).
    #[arg(long, env = "SOUQ_EDGE_TLS_CERT", requires = "edge_tls_key")]
    pub edge_tls_cert: Option<PathBuf>,
    /// The PEM private key of --edge-tls-cert.
    #[arg(long, env = "SOUQ_EDGE_TLS_KEY", requires = "edge_tls_cert")]
    pub edge_tls_key: Option<PathBuf>,
}

impl EdgeLimitArgs {
    /// Applies the options to an edge's configuration; its `Config::validate` checks them.
    pub fn apply(&self, cfg: &mut souq_edge_proxy::Config) {
        cfg.header_read_timeout = std::time::Duration::from_secs(self.header_read_timeout_s);
        cfg.body_read_timeout = std::time::Duration::from_secs(self.body_read_timeout_s);
        cfg.max_connections = self.max_connections;
        cfg.write_timeout = std::time::Duration::from_secs(self.write_timeout_s);
        cfg.trusted_proxies = self.trusted_proxies.iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
        cfg.tls = match (&self.edge_tls_cert, &self.edge_tls_key) {
            (Some(cert), Some(key)) => Some(souq_edge_proxy::tls::TlsFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
    }
}

/// `souq up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// Address of the public REST edge.
    #[arg(long, env = "SOUQ_EDGE_ADDR", default_value = "127.0.0.1:8080")]
    pub edge_addr: SocketAddr,
    /// Name of the built-in node; up-<hostname> when unset.
    #[arg(long, env = "SOUQ_NODE_NAME")]
    pub node_name: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub mail: MailArgs,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    /// Most replicas one deployment may ask for.
    #[arg(long, env = "SOUQ_MAX_REPLICAS", default_value_t = 8)]
    pub max_replicas: u32,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    #[command(flatten)]
    pub timing: NodeTimingArgs,
    #[command(flatten)]
    pub meter: MeterArgs,
    #[command(flatten)]
    pub limits: EdgeLimitArgs,
}

/// `souq node`: one action on the nodes, through the edge's admin endpoints.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: NodeAction,
    /// The edge's URL.
    #[arg(long, global = true, env = "SOUQ_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The control plane's admin token; read from <data-dir>/admin-token when unset.
    #[arg(long, global = true, env = "SOUQ_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Where `souq up` keeps its admin-token file.
    #[arg(long, global = true, env = "SOUQ_DATA_DIR", default_value = ".souq")]
    pub data_dir: PathBuf,
    /// Print the edge's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The actions of `souq node`.
#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Every node: NAME REGION STATE SCHEDULING INSTANCES LAST-HEARTBEAT.
    List,
    /// Place nothing new on the node; what runs there stays.
    Cordon {
        /// The node's name.
        name: String,
    },
    /// Cordon the node and move its instances elsewhere, each retired once its replacement runs.
    Drain {
        /// The node's name.
        name: String,
    },
    /// End a cordon or a drain: the node takes work again.
    Uncordon {
        /// The node's name.
        name: String,
    },
}

/// How often agents heartbeat and how soon a silent node counts as down; the control
/// plane's `Config::validate` checks them (the TTL must exceed the interval).
#[derive(Debug, Args, Clone)]
pub struct NodeTimingArgs {
    /// How often node agents heartbeat, in seconds.
    #[arg(long, env = "SOUQ_HEARTBEAT_INTERVAL_S", default_value_t = souq_control_plane::config::HEARTBEAT_INTERVAL.as_secs())]
    pub heartbeat_interval_s: u64,
    /// Seconds without a heartbeat after which a node is down: it takes no work, and its
    /// instances are replaced on other nodes (they keep serving until then).
    #[arg(long, env = "SOUQ_NODE_TTL_S", default_value_t = souq_control_plane::config::NODE_TTL.as_secs())]
    pub node_ttl_s: u64,
}

impl NodeTimingArgs {
    /// Sets the interval and the TTL on a control plane's configuration and checks it again.
    pub fn apply(&self, cfg: &mut souq_control_plane::Config) -> Result<(), ConfigError> {
        cfg.heartbeat_interval = std::time::Duration::from_secs(self.heartbeat_interval_s);
        cfg.node_ttl = std::time::Duration::from_secs(self.node_ttl_s);
        cfg.validate().map_err(|e| ConfigError(e.to_string()))
    }
}

/// `souq control-plane`.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// Address of the gRPC listener.
    #[arg(long, env = "SOUQ_GRPC_ADDR", default_value = "127.0.0.1:7000")]
    pub grpc_addr: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// Secret that node agents present to register (at least 16 characters).
    #[arg(long, env = "SOUQ_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: String,
    #[command(flatten)]
    pub grpc: GrpcTlsArgs,
    /// PKCS#8 PEM Ed25519 key that signs access tokens; made on first start if missing.
    #[arg(long, env = "SOUQ_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub mail: MailArgs,
    /// Most replicas one deployment may ask for.
    #[arg(long, env = "SOUQ_MAX_REPLICAS", default_value_t = 8)]
    pub max_replicas: u32,
    #[command(flatten)]
    pub quotas: QuotaArgs,
    #[command(flatten)]
    pub timing: NodeTimingArgs,
    /// Operators' secret for the admin endpoints (`souq node …`), at least 32 characters;
    /// without it they answer 403.
    #[arg(long, env = "SOUQ_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

/// `souq agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// Address of the agent's gRPC listener.
    #[arg(long, env = "SOUQ_AGENT_ADDR", default_value = "127.0.0.1:7100")]
    pub agent_addr: SocketAddr,
    /// URL the control plane uses to reach this agent; http://<agent-addr> when unset.
    #[arg(long, env = "SOUQ_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// The control plane's gRPC URL.
    #[arg(long, env = "SOUQ_CONTROL_PLANE_URL", default_value = "http://127.0.0.1:7000")]
    pub control_plane_url: String,
    /// Secret that admits this node.
    #[arg(long, env = "SOUQ_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: String,
    #[command(flatten)]
    pub grpc: GrpcTlsArgs,
    /// Unique name of this node.
    #[arg(long, env = "SOUQ_NODE_NAME")]
    pub node_name: Option<String>,
    /// Region label.
    #[arg(long, env = "SOUQ_REGION", default_value = "default")]
    pub region: String,
    /// Directory the runtime sources are written to before building images.
    #[arg(long, env = "SOUQ_DATA_DIR", default_value = ".souq")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// Sandbox limits and the Docker Engine; the operator's to set, never a request's.
#[derive(Debug, Args, Clone)]
pub struct SandboxArgs {
    /// Docker Engine socket, e.g. unix:///var/run/docker.sock (DOCKER_HOST or the default when unset).
    #[arg(long, env = "SOUQ_DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Sandbox memory (and memory+swap) in MiB.
    #[arg(long, env = "SOUQ_SANDBOX_MEMORY_MB", default_value_t = Limits::DEFAULT.memory_mb)]
    pub sandbox_memory_mb: u64,
    /// Sandbox CPU in thousandths of a core.
    #[arg(long, env = "SOUQ_SANDBOX_CPUS_MILLI", default_value_t = Limits::DEFAULT.cpus_milli)]
    pub sandbox_cpus_milli: u32,
    /// Most processes and threads in a sandbox.
    #[arg(long, env = "SOUQ_SANDBOX_PIDS", default_value_t = Limits::DEFAULT.pids)]
    pub sandbox_pids: u32,
    /// Size of the sandbox's /tmp in MiB.
    #[arg(long, env = "SOUQ_SANDBOX_TMPFS_MB", default_value_t = Limits::DEFAULT.tmpfs_mb)]
    pub sandbox_tmpfs_mb: u64,
    /// Most open files in a sandbox.
    #[arg(long, env = "SOUQ_SANDBOX_NOFILE", default_value_t = Limits::DEFAULT.nofile)]
    pub sandbox_nofile: u64,
    /// Largest file a sandbox may write, in MiB.
    #[arg(long, env = "SOUQ_SANDBOX_FSIZE_MB", default_value_t = Limits::DEFAULT.fsize_mb)]
    pub sandbox_fsize_mb: u64,
    /// Longest wall time of one execute in ms; requests may only ask for less.
    #[arg(long, env = "SOUQ_MAX_TIMEOUT_MS", default_value_t = Limits::DEFAULT.max_timeout_ms)]
    pub max_timeout_ms: u64,
    /// Most bytes of stdout+stderr kept per run.
    #[arg(long, env = "SOUQ_OUTPUT_LIMIT_BYTES", default_value_t = Limits::DEFAULT.output_bytes)]
    pub output_limit_bytes: usize,
    /// Most sandboxes running at once on this node.
    #[arg(long, env = "SOUQ_MAX_CONCURRENT", default_value_t = 8)]
    pub max_concurrent: usize,
    /// Most executes waiting for a slot; past it the answer is 503 with Retry-After.
    #[arg(long, env = "SOUQ_QUEUE_DEPTH", default_value_t = 32)]
    pub queue_depth: usize,
    /// Most executes of one user on this node at once, running or waiting; past it the
    /// answer is 429 (too-many-concurrent) with Retry-After, before a slot is taken.
    #[arg(long, env = "SOUQ_MAX_CONCURRENT_PER_USER", default_value_t = souq_node_agent::config::DEFAULT_MAX_CONCURRENT_PER_USER)]
    pub max_concurrent_per_user: usize,
    /// Warm sandboxes kept waiting per runtime.
    #[arg(long, env = "SOUQ_POOL_SIZE", default_value_t = PoolConfig::DEFAULT.size)]
    pub pool_size: usize,
    /// Runs a user's warm sandbox serves before it is replaced.
    #[arg(long, env = "SOUQ_POOL_MAX_USES", default_value_t = PoolConfig::DEFAULT.max_uses)]
    pub pool_max_uses: u32,
    /// Seconds a user's warm sandbox may sit unused before it is destroyed.
    #[arg(long, env = "SOUQ_POOL_IDLE_S", default_value_t = PoolConfig::DEFAULT.idle_ttl.as_secs())]
    pub pool_idle_s: u64,
    /// Most warm sandboxes held for users at once.
    #[arg(long, env = "SOUQ_POOL_MAX_SESSIONS", default_value_t = PoolConfig::DEFAULT.max_sessions)]
    pub pool_max_sessions: usize,
    /// How many times its CPUs this node offers to API instances (CPU limits are ceilings,
    /// not reservations; memory is never overcommitted).
    #[arg(long, env = "SOUQ_CPU_OVERCOMMIT", default_value_t = souq_node_agent::DEFAULT_CPU_OVERCOMMIT)]
    pub cpu_overcommit: u32,
}

impl SandboxArgs {
    /// The warm pool settings; the agent's `Config::validate` checks them.
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            size: self.pool_size,
            max_uses: self.pool_max_uses,
            idle_ttl: std::time::Duration::from_secs(self.pool_idle_s),
            max_sessions: self.pool_max_sessions,
            ..PoolConfig::DEFAULT
        }
    }

    /// The sandbox limits; the agent's `Config::validate` checks them.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_mb: self.sandbox_memory_mb,
            cpus_milli: self.sandbox_cpus_milli,
            pids: self.sandbox_pids,
            tmpfs_mb: self.sandbox_tmpfs_mb,
            max_timeout_ms: self.max_timeout_ms,
            output_bytes: self.output_limit_bytes,
            nofile: self.sandbox_nofile,
            fsize_mb: self.sandbox_fsize_mb,
        }
    }

    /// A node agent's configuration from these options, checked. Its runtime images are
    /// learned later (building them takes minutes; a bad option must not wait for that).
    pub fn agent_config(&self, base: AgentBase) -> Result<souq_node_agent::Config, ConfigError> {
        let cfg = souq_node_agent::Config {
            node_name: base.node_name,
            region: base.region,
            control_plane_url: base.control_plane_url,
            join_token: base.join_token,
            advertise_addr: base.advertise_addr,
            docker_host: self.docker_host.clone(),
            images: Default::default(),
            limits: self.limits(),
            max_concurrent: self.max_concurrent,
            queue_depth: self.queue_depth,
            max_concurrent_per_user: self.max_concurrent_per_user,
            pool: self.pool(),
            channel_dir: channel_dir(&base.data_dir)?,
            cpu_overcommit: self.cpu_overcommit,
            // Set by the role from its --tls-* options, once they are checked.
            metrics: Default::default(),
            health: Default::default(),
            grpc_tls: souq_proto::tls::Transport::Insecure,
        };
        cfg.validate().map_err(ConfigError)?;
        Ok(cfg)
    }
}

/// What a node agent's configuration takes besides the sandbox options.
pub struct AgentBase {
    /// The node's name.
    pub node_name: String,
    /// Its region label.
    pub region: String,
    /// The control plane's gRPC URL.
    pub control_plane_url: String,
    /// The cluster's secret.
    pub join_token: String,
    /// Where the control plane reaches the agent.
    pub advertise_addr: Option<String>,
    /// The data dir; the sandboxes' channel sockets live under it.
    pub data_dir: PathBuf,
}

/// Where the sandboxes' channel sockets live: `<data-dir>/channels`, as an absolute path,
/// since the Docker Engine bind-mounts it (the agent checks its length).
fn channel_dir(data_dir: &std::path::Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(data_dir.join("channels"))
        .map_err(|e| bad("--data-dir", format!("{}: {e}", data_dir.display())))
}

/// `souq edge`.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// Address of the public REST edge.
    #[arg(long, env = "SOUQ_EDGE_ADDR", default_value = "127.0.0.1:8080")]
    pub edge_addr: SocketAddr,
    /// The control plane's gRPC URL.
    #[arg(long, env = "SOUQ_CONTROL_PLANE_URL", default_value = "http://127.0.0.1:7000")]
    pub control_plane_url: String,
    /// The cluster's secret, presented to the control plane's route stream and to the agents.
    #[arg(long, env = "SOUQ_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: String,
    #[command(flatten)]
    pub grpc: GrpcTlsArgs,
    /// Unique name of this edge; names its metering stream in Redis, so a restarted edge
    /// flushes what it left. `<hostname>-<edge-addr>` when unset.
    #[arg(long, env = "SOUQ_EDGE_ID")]
    pub edge_id: Option<String>,
    #[command(flatten)]
    pub meter: MeterArgs,
    #[command(flatten)]
    pub limits: EdgeLimitArgs,
}

/// Mutual TLS between the roles (`souq certs` makes the files); plain text only with
/// `--insecure-grpc`.
#[derive(Debug, Args, Clone)]
pub struct GrpcTlsArgs {
    /// This role's certificate (PEM), issued by the --tls-ca CA for this role (`souq certs`).
    #[arg(long, env = "SOUQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "SOUQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): every peer must hold a certificate it issued.
    #[arg(long, env = "SOUQ_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Speak plain-text gRPC to the other roles, on a trusted network only: tokens then
    /// cross it in clear and only the join token tells the roles from anyone else.
    #[arg(long, env = "SOUQ_INSECURE_GRPC")]
    pub insecure_grpc: bool,
}

impl GrpcTlsArgs {
    /// The transport of a role: its certificate checked (it must be a `role` certificate
    /// of the CA), or plain text when asked for, with a warning.
    pub fn transport(&self, role: Role) -> Result<Transport, ConfigError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca, self.insecure_grpc) {
            (None, None, None, true) => {
                warn!(
                    "--insecure-grpc: the internal gRPC links are plain text; tokens cross the network in clear \
                     and any peer holding the join token can act as any role. Use on a trusted network only."
                );
                Ok(Transport::Insecure)
            }
            (Some(cert), Some(key), Some(ca), false) => {
                let t = Transport::load(cert, key, ca).map_err(|e| ConfigError(format!("invalid value for {e}")))?;
                match t.role() {
                    Some(r) if r == role => Ok(t),
                    other => Err(ConfigError(format!(
                        "invalid value for --tls-cert: a {} certificate; the {role} needs a {role} one (souq certs --role {role})",
                        other.map_or("role-less", Role::as_str)
                    ))),
                }
            }
            (_, _, _, true) => Err(ConfigError("--insecure-grpc excludes --tls-cert, --tls-key and --tls-ca".into())),
            _ => Err(ConfigError(
                "missing --tls-cert, --tls-key and --tls-ca (issue them with `souq certs`), \
                 or --insecure-grpc for plain-text gRPC on a trusted network"
                    .into(),
            )),
        }
    }
}

/// `souq certs`: issues a certificate for one role.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The directory of the CA (`ca.pem`, `ca.key`; made on first use) and of the
    /// certificates it issues.
    #[arg(long, env = "SOUQ_CERTS_DIR", default_value = ".souq/tls")]
    pub dir: PathBuf,
    /// The role the certificate is for: control-plane, agent or edge.
    #[arg(long)]
    pub role: String,
    /// The files' name: `<name>.pem` and `<name>.key` (kept if it exists, so the
    /// identity an agent's node is pinned to survives a renewal); the role when unset.
    #[arg(long)]
    pub name: Option<String>,
    /// How many days the certificate is valid.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// This host's name, for a default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| souq_node_agent::config::is_node_name(h))
        .unwrap_or_else(|| "local".to_owned())
}
