//! The control plane's configuration, and the checks it passes before any port is bound:
//! every error names the option at fault and never echoes a secret.
use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use crate::{clock, mail};

/// Most replicas an operator may allow one deployment.
pub const MAX_REPLICAS_LIMIT: u32 = 64;
/// Highest an operator may set the per-user quotas of APIs, replicas, versions per API
/// and executes a minute.
pub const MAX_QUOTA: u32 = 100_000;
/// Highest an operator may set a user's instance memory, in MiB (64 TiB).
pub const MAX_QUOTA_MEMORY_MB: u64 = 64 << 20;
/// How often agents heartbeat, unless configured.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a node may go without a heartbeat before it counts as down, unless configured:
/// four heartbeats, so one or two lost ones do not move its instances, and a lost node is
/// marked down within 10 s.
pub const NODE_TTL: Duration = Duration::from_secs(8);
/// Fewest characters of the operators' admin token.
pub const MIN_ADMIN_TOKEN: usize = 32;
/// Most characters of the operators' admin token (it travels in a header).
pub const MAX_ADMIN_TOKEN: usize = 1024;

/// The control plane's configuration; [`Config::validate`] checks it.
#[derive(Clone)]
pub struct Config {
    /// `sqlite:…` or `postgres://…` (may hold a password; never logged).
    pub database_url: String,
    /// Where the Ed25519 token-signing key lives (made on first start).
    pub signing_key_path: PathBuf,
    /// The secret agents and edges present (never logged).
    pub join_token: String,
    /// How long an access token lives.
    pub access_token_ttl: Duration,
    /// How often agents heartbeat ([`HEARTBEAT_INTERVAL`] unless changed).
    pub heartbeat_interval: Duration,
    /// A node that has not heartbeated for this long is down: it takes no work and its
    /// instances are replaced ([`NODE_TTL`] unless changed).
    pub node_ttl: Duration,
    /// The operators' secret for the `Nodes` service (list, cordon, drain, uncordon),
    /// presented as `authorization: Bearer <token>` (never logged). `None`: admin access
    /// is refused.
    pub admin_token: Option<String>,
    /// The wall timeout of an execute or an API call that names none; the control plane
    /// sends it to the agents, which cap it at their own maximum.
    /// [`souq_proto::limits::DEFAULT_TIMEOUT`] unless changed.
    pub default_timeout: Duration,
    /// The public URL of the edge; links in mails are built from it.
    pub public_url: String,
    /// Where mail goes.
    pub mail: MailConfig,
    /// The `From` of every mail, e.g. `Souq <no-reply@example.com>`.
    pub mail_from: String,
    /// The time source: the system's clock, or a [`clock::ManualClock`] in tests.
    pub clock: Arc<dyn clock::Clock>,
    /// Most replicas one deployment may ask for.
    pub max_replicas: u32,
    /// What one user may hold and start.
    pub quotas: Quotas,
    /// Signups per client address and in all, per window.
    pub signup_limit: RateConfig,
    /// Forgotten-password requests per client address and in all, per window.
    pub forgot_limit: RateConfig,
    /// How long audit-log rows are kept.
    pub audit_retention: Duration,
    /// How the gRPC services are served and the agents dialed: mutual TLS with the
    /// control plane's certificate, or plain text (the default of this library; `souq`
    /// refuses it without `--insecure-grpc`).
    pub grpc_tls: souq_proto::tls::Transport,
    /// The control plane's metrics; the `souq` binary registers them and serves the
    /// registry (fresh, unregistered ones unless set).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The statuses the gRPC health service answers: SERVING while `run` serves,
    /// NOT_SERVING once shutdown starts.
    pub health: tonic_health::server::HealthReporter,
}

/// The per-user quotas; [`Config::validate`] checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Most APIs one user may own (`--quota-apis`).
    pub apis: u32,
    /// Most replicas one user's running deployments may ask for in total (`--quota-replicas`).
    pub replicas: u32,
    /// Most instance memory, in MiB, one user's running deployments may reserve in total:
    /// replicas × the memory a node reserves per instance (`--quota-instance-memory-mb`).
    pub instance_memory_mb: u64,
    /// Most versions one API keeps; past it the oldest that no deployment or instance
    /// uses are deleted (`--quota-versions-per-api`).
    pub versions_per_api: u32,
    /// Most executes one user may start a minute (`--quota-executes-per-minute`).
    pub executes_per_minute: u32,
}

impl Quotas {
    /// The defaults: 20 APIs, 10 replicas and 2 GiB of instance memory in total (eight
    /// instances at the agents' default 256 MiB), 50 versions per API, 60 executes a minute.
    pub const DEFAULT: Quotas =
        Quotas { apis: 20, replicas: 10, instance_memory_mb: 2048, versions_per_api: 50, executes_per_minute: 60 };
}

impl Default for Quotas {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where the control plane sends mail.
#[derive(Clone)]
pub enum MailConfig {
    /// An SMTP server: `smtp://…`, `smtps://…` (may hold a password; never logged).
    Smtp(String),
    /// `.eml` files in a directory.
    Files(PathBuf),
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("signing_key_path", &self.signing_key_path)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("node_ttl", &self.node_ttl)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("default_timeout", &self.default_timeout)
            .field("public_url", &self.public_url)
            .field("max_replicas", &self.max_replicas)
            .field("quotas", &self.quotas)
            .field("signup_limit", &self.signup_limit)
            .field("forgot_limit", &self.forgot_limit)
            .field("audit_retention", &self.audit_retention)
            .finish_non_exhaustive()
    }
}

/// A configuration value the control plane cannot run with: which option, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for {option}: {problem}")]
pub struct ConfigError {
    /// The command-line option (`--max-replicas`), or the [`Config`] field for settings
    /// with no option of their own (`access_token_ttl`).
    pub option: &'static str,
    /// What is wrong; never the value of a secret.
    pub problem: String,
}

fn bad(option: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { option, problem: problem.into() }
}

/// How many requests a window admits, per client address and in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// Requests per client address per window.
    pub per_client: u32,
    /// Requests from every client together per window.
    pub global: u32,
    /// The window.
    pub window: Duration,
}

impl RateConfig {
    /// `per_client` and `global` requests per hour.
    pub const fn per_hour(per_client: u32, global: u32) -> Self {
        RateConfig { per_client, global, window: Duration::from_secs(3600) }
    }
}

/// Signups per client address and in all, per hour, unless configured.
pub const SIGNUP_LIMIT: RateConfig = RateConfig::per_hour(100, 1000);
/// Forgotten-password requests per client address and in all, per hour, unless configured.
pub const FORGOT_LIMIT: RateConfig = RateConfig::per_hour(30, 1000);
/// How long audit rows are kept, unless configured.
pub const AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Most an operator may set a signup or forgotten-password limit to, per hour.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// Longest audit retention, in days (ten years).
pub const MAX_AUDIT_RETENTION_DAYS: u64 = 3650;

/// The signup and forgotten-password limits and the audit retention.
fn check_account_limits(cfg: &Config) -> Result<(), ConfigError> {
    let limits = [
        ("--signup-per-client-per-hour", cfg.signup_limit.per_client),
        ("--signups-per-hour", cfg.signup_limit.global),
        ("--forgot-per-client-per-hour", cfg.forgot_limit.per_client),
        ("--forgots-per-hour", cfg.forgot_limit.global),
    ];
    for (option, n) in limits {
        if !(1..=MAX_RATE_LIMIT).contains(&n) {
            return Err(bad(option, format!("must be 1 to {MAX_RATE_LIMIT}")));
        }
    }
    for (option, limit) in [("signup_limit", cfg.signup_limit), ("forgot_limit", cfg.forgot_limit)] {
        if limit.window.is_zero() {
            return Err(bad(option, "the window must be more than 0"));
        }
    }
    let day = Duration::from_secs(24 * 3600);
    if cfg.audit_retention < day || cfg.audit_retention > day * 3650 {
        return Err(bad("--audit-retention-days", format!("must be 1 to {MAX_AUDIT_RETENTION_DAYS}")));
    }
    Ok(())
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
            heartbeat_interval: HEARTBEAT_INTERVAL,
            node_ttl: NODE_TTL,
            admin_token: None,
            default_timeout: souq_proto::limits::DEFAULT_TIMEOUT,
            public_url,
            mail: MailConfig::Files(mail_dir),
            mail_from: "Souq <no-reply@localhost>".into(),
            clock: Arc::new(clock::SystemClock),
            max_replicas: 8,
            grpc_tls: souq_proto::tls::Transport::Insecure,
            quotas: Quotas::DEFAULT,
            signup_limit: SIGNUP_LIMIT,
            forgot_limit: FORGOT_LIMIT,
            audit_retention: AUDIT_RETENTION,
            metrics: Arc::default(),
            health: tonic_health::server::HealthReporter::new(),
        }
    }

    /// Checks everything `run` would otherwise trip over late (after binding, after
    /// connecting, or at the first request): pure checks, no I/O but one `stat` of the key
    /// path. The first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database_url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // Never echo the value: it may hold a password.
            return Err(bad("--database-url", "must start with postgres://, postgresql:// or sqlite:"));
        }
        if self.signing_key_path.as_os_str().is_empty() || self.signing_key_path.is_dir() {
            return Err(bad("--signing-key-file", "must name a file (made on first start if missing)"));
        }
        souq_proto::limits::check_join_token(&self.join_token).map_err(|e| bad("--join-token", e))?;
        if let Some(token) = &self.admin_token {
            check_admin_token(token)?;
        }
        if !(1..=MAX_REPLICAS_LIMIT).contains(&self.max_replicas) {
            return Err(bad("--max-replicas", format!("must be 1 to {MAX_REPLICAS_LIMIT}")));
        }
        check_quotas(&self.quotas)?;
        check_account_limits(self)?;
        check_public_url(&self.public_url)?;
        mail::check_sender(&self.mail_from).map_err(|e| bad("--mail-from", e.to_string()))?;
        if let MailConfig::Smtp(url) = &self.mail {
            mail::check_smtp_url(url).map_err(|e| bad("--smtp-url", e.to_string()))?;
        }
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err(bad("access_token_ttl", "must be at least 1 s (tokens count time in seconds)"));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(bad("--heartbeat-interval-s", "must be more than 0"));
        }
        if self.heartbeat_interval >= self.node_ttl {
            return Err(bad("--node-ttl-s", "must be longer than the heartbeat interval, or every node counts as down between heartbeats"));
        }
        if u32::try_from(self.heartbeat_interval.as_millis()).is_err() {
            return Err(bad("--heartbeat-interval-s", "must fit in u32 milliseconds, as agents are told it"));
        }
        if self.default_timeout < Duration::from_millis(1) {
            return Err(bad("default_timeout", "must be at least 1 ms"));
        }
        Ok(())
    }
}

/// The admin token: [`MIN_ADMIN_TOKEN`] to [`MAX_ADMIN_TOKEN`] visible ASCII characters (it
/// travels in an `authorization` header). The message never echoes it.
fn check_admin_token(token: &str) -> Result<(), ConfigError> {
    let visible = token.bytes().all(|b| b.is_ascii_graphic());
    if !(MIN_ADMIN_TOKEN..=MAX_ADMIN_TOKEN).contains(&token.len()) || !visible {
        return Err(bad("--admin-token", format!("must be {MIN_ADMIN_TOKEN} to {MAX_ADMIN_TOKEN} visible ASCII characters")));
    }
    Ok(())
}

/// Every quota is at least 1 and bounded; an API keeps at least 2 versions, so one can be
/// deployed while the next is stored.
fn check_quotas(q: &Quotas) -> Result<(), ConfigError> {
    let counts = [
        ("--quota-apis", q.apis, 1),
        ("--quota-replicas", q.replicas, 1),
        ("--quota-versions-per-api", q.versions_per_api, 2),
        ("--quota-executes-per-minute", q.executes_per_minute, 1),
    ];
    for (option, value, least) in counts {
        if !(least..=MAX_QUOTA).contains(&value) {
            return Err(bad(option, format!("must be {least} to {MAX_QUOTA}")));
        }
    }
    if !(1..=MAX_QUOTA_MEMORY_MB).contains(&q.instance_memory_mb) {
        return Err(bad("--quota-instance-memory-mb", format!("must be 1 to {MAX_QUOTA_MEMORY_MB}")));
    }
    Ok(())
}

/// An http:// or https:// URL with a host: mail links are built from it.
fn check_public_url(url: &str) -> Result<(), ConfigError> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or_default();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("--public-url", "must be an http:// or https:// URL with a host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Config {
        Config::new(
            "sqlite://x.db?mode=rwc".into(),
            "/nonexistent/jwt.pem".into(),
            "a-join-token-of-16+".into(),
            "https://api.example.com".into(),
            "/tmp/mail".into(),
        )
    }

    fn option_of(f: impl FnOnce(&mut Config)) -> &'static str {
        let mut cfg = good();
        f(&mut cfg);
        cfg.validate().map(|()| "").unwrap_or_else(|e| e.option)
    }

    #[test]
    fn every_problem_names_its_option_and_hides_secrets() {
        assert_eq!(good().validate(), Ok(()));
        assert_eq!(option_of(|c| c.database_url = "mysql://root:hunter2@db/souq".into()), "--database-url");
        assert_eq!(option_of(|c| c.database_url = "postgresql://u@h/db".into()), "");
        assert_eq!(option_of(|c| c.signing_key_path = std::env::temp_dir()), "--signing-key-file");
        assert_eq!(option_of(|c| c.join_token = "short".into()), "--join-token");
        assert_eq!(option_of(|c| c.join_token = "sixteen chars with spaces".into()), "--join-token");
        assert_eq!(option_of(|c| c.max_replicas = 0), "--max-replicas");
        assert_eq!(option_of(|c| c.max_replicas = 65), "--max-replicas");
        assert_eq!(option_of(|c| c.max_replicas = 64), "");
        assert_eq!(option_of(|c| c.public_url = "ftp://x".into()), "--public-url");
        assert_eq!(option_of(|c| c.public_url = "http://".into()), "--public-url");
        assert_eq!(option_of(|c| c.mail_from = "nobody".into()), "--mail-from");
        assert_eq!(option_of(|c| c.mail = MailConfig::Smtp("http://mail".into())), "--smtp-url");
        assert_eq!(option_of(|c| c.mail = MailConfig::Smtp("smtp://user:pw@mail.example.com:587".into())), "");
        assert_eq!(option_of(|c| c.access_token_ttl = Duration::ZERO), "access_token_ttl");
        assert_eq!(option_of(|c| c.heartbeat_interval = Duration::ZERO), "--heartbeat-interval-s");
        assert_eq!(option_of(|c| c.node_ttl = c.heartbeat_interval), "--node-ttl-s");
        assert_eq!(option_of(|c| c.default_timeout = Duration::ZERO), "default_timeout");
        assert_eq!(option_of(|c| c.quotas.apis = 0), "--quota-apis");
        assert_eq!(option_of(|c| c.quotas.replicas = MAX_QUOTA + 1), "--quota-replicas");
        assert_eq!(option_of(|c| c.quotas.versions_per_api = 1), "--quota-versions-per-api");
        assert_eq!(option_of(|c| c.quotas.versions_per_api = 2), "");
        assert_eq!(option_of(|c| c.quotas.executes_per_minute = 0), "--quota-executes-per-minute");
        assert_eq!(option_of(|c| c.quotas.instance_memory_mb = 0), "--quota-instance-memory-mb");

        let mut cfg = good();
        cfg.database_url = "mysql://root:hunter2@db/souq".into();
        let shown = cfg.validate().unwrap_err().to_string();
        assert!(shown.starts_with("invalid value for --database-url: "), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        cfg = good();
        cfg.mail = MailConfig::Smtp("smtp://user:hunter2@mail.example.com:notaport".into());
        let shown = cfg.validate().unwrap_err().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn nodes_are_down_within_10_s_and_the_admin_token_is_checked() {
        let cfg = good();
        assert_eq!((cfg.heartbeat_interval, cfg.node_ttl), (Duration::from_secs(2), Duration::from_secs(8)));
        assert!(cfg.node_ttl < Duration::from_secs(10));
        assert_eq!(option_of(|c| c.node_ttl = Duration::from_secs(2)), "--node-ttl-s");
        assert_eq!(option_of(|c| c.heartbeat_interval = Duration::from_millis(500)), "");
        assert_eq!(option_of(|c| c.admin_token = Some("a".repeat(32))), "");
        assert_eq!(option_of(|c| c.admin_token = Some("a".repeat(31))), "--admin-token");
        assert_eq!(option_of(|c| c.admin_token = Some(format!("{} b", "a".repeat(32)))), "--admin-token");
        assert_eq!(option_of(|c| c.admin_token = Some("a".repeat(1025))), "--admin-token");
        let mut cfg = good();
        cfg.admin_token = Some(format!("secret-{}", "x".repeat(20)));
        let shown = format!("{} {cfg:?}", cfg.validate().unwrap_err());
        assert!(!shown.contains("secret-"), "{shown}");
    }

    #[test]
    fn account_limits_and_audit_retention_are_bounded() {
        assert_eq!(option_of(|c| c.signup_limit.per_client = 0), "--signup-per-client-per-hour");
        assert_eq!(option_of(|c| c.signup_limit.global = MAX_RATE_LIMIT + 1), "--signups-per-hour");
        assert_eq!(option_of(|c| c.forgot_limit.per_client = 0), "--forgot-per-client-per-hour");
        assert_eq!(option_of(|c| c.forgot_limit.global = 0), "--forgots-per-hour");
        assert_eq!(option_of(|c| c.forgot_limit.window = Duration::ZERO), "forgot_limit");
        assert_eq!(option_of(|c| c.audit_retention = Duration::from_secs(3600)), "--audit-retention-days");
        assert_eq!(option_of(|c| c.audit_retention = Duration::from_secs(3651 * 24 * 3600)), "--audit-retention-days");
        assert_eq!(option_of(|c| c.audit_retention = Duration::from_secs(3650 * 24 * 3600)), "");
    }
}
