//! The agent's configuration, and [`Config::validate`], which refuses a bad one before any
//! port is bound, naming the command-line option to fix.
use std::{ops::RangeInclusive, path::PathBuf, sync::Arc, time::Duration};

use tonic::transport::Endpoint;

use crate::{
    docker::Images,
    metrics::Metrics,
    sandbox::{channel::MAX_CHANNEL_DIR, pool::PoolConfig, profile::Limits},
};

/// The default of [`Config::cpu_overcommit`].
pub const DEFAULT_CPU_OVERCOMMIT: u32 = 4;
/// The default of [`Config::max_concurrent_per_user`].
pub const DEFAULT_MAX_CONCURRENT_PER_USER: usize = 2;
/// Longest node name; the control plane's registry refuses longer ones.
pub const MAX_NODE_NAME: usize = 128;
/// Longest region; deployments can only ask for regions up to this long.
pub const MAX_REGION: usize = 64;
/// Longest advertised address; the control plane's registry refuses longer ones.
pub const MAX_ADVERTISE_ADDR: usize = 256;

/// The agent's configuration; see [`Config::validate`], which `run` calls too.
#[derive(Clone)]
pub struct Config {
    /// Unique name of this node; labels every container it makes.
    pub node_name: String,
    /// Region label, e.g. `me-central`.
    pub region: String,
    /// The control plane's gRPC URL.
    pub control_plane_url: String,
    /// The secret that admits this node, and that callers of this agent must present.
    pub join_token: String,
    /// Where the control plane reaches this agent; `http://<listener address>` if unset.
    pub advertise_addr: Option<String>,
    /// `unix:///path/to/docker.sock`; `DOCKER_HOST` or the default socket if unset.
    pub docker_host: Option<String>,
    /// The image of each runtime.
    pub images: Images,
    /// Sandbox limits.
    pub limits: Limits,
    /// Most sandboxes running at once; further executes wait.
    pub max_concurrent: usize,
    /// Most executes waiting for a slot; further ones are turned away with 503.
    pub queue_depth: usize,
    /// Most executes of one user on this node at once, running or waiting
    /// ([`DEFAULT_MAX_CONCURRENT_PER_USER`]); further ones are turned away with 429
    /// before they take a place of the node's.
    pub max_concurrent_per_user: usize,
    /// Warm sandboxes.
    pub pool: PoolConfig,
    /// An absolute directory, owned by the agent and seen at the same path by the Docker
    /// Engine, for the sandboxes' channel sockets; at most [`MAX_CHANNEL_DIR`] bytes.
    pub channel_dir: PathBuf,
    /// How many times its CPUs the node offers to instances ([`DEFAULT_CPU_OVERCOMMIT`];
    /// 1 to 64). An instance's CPU limit is a ceiling, not a reservation: most instances
    /// idle most of the time, so the scheduler may place more of them than the cores
    /// would hold at full load. Memory is never overcommitted.
    pub cpu_overcommit: u32,
    /// How the `Agent` service is served and the control plane dialed: mutual TLS with
    /// this agent's certificate, or plain text (this library's default; `souq` refuses it
    /// without `--insecure-grpc`).
    pub grpc_tls: souq_proto::tls::Transport,
    /// Where the agent counts (`Arc::default()`: fresh families nobody serves); the
    /// process registers them with [`Metrics::register`].
    pub metrics: Arc<Metrics>,
    /// The gRPC health service's statuses (`HealthReporter::new()`): the overall one (`""`)
    /// is SERVING while the agent serves and its Docker Engine answers.
    pub health: tonic_health::server::HealthReporter,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the join token.
        f.debug_struct("Config")
            .field("node_name", &self.node_name)
            .field("region", &self.region)
            .field("control_plane_url", &self.control_plane_url)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The message for a bad value of `option`, in the cli's words.
fn bad(option: &str, why: impl std::fmt::Display) -> String {
    format!("invalid value for {option}: {why}")
}

fn in_range(option: &str, value: u64, range: RangeInclusive<u64>) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(bad(option, format!("{value} is outside {}..={}", range.start(), range.end())))
    }
}

/// `usize` as `u64` for [`in_range`]; never fails on the platforms Souq runs on.
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// 1 to `max` characters of `[A-Za-z0-9._-]`: what the control plane stores and matches.
fn is_label(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Whether `name` is a valid node name: 1 to [`MAX_NODE_NAME`] characters of
/// `[A-Za-z0-9._-]`, the control plane's rule. For callers that pick a default name.
pub fn is_node_name(name: &str) -> bool {
    is_label(name, MAX_NODE_NAME)
}

/// An `http://` or `https://` URL with a host, as tonic parses it.
fn check_grpc_url(option: &str, url: &str) -> Result<(), String> {
    let not_url = || bad(option, format!("{url:?} is not an http:// or https:// URL with a host"));
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(not_url());
    }
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|_| not_url())?;
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(not_url());
    }
    Ok(())
}

impl Config {
    /// Checks what `run` would otherwise find wrong only later (or never: an empty join
    /// token would admit every caller). The first problem found is returned as a message
    /// that names the option to fix, e.g. `invalid value for --node-name: …`; the join
    /// token is never echoed.
    pub fn validate(&self) -> Result<(), String> {
        if !is_node_name(&self.node_name) {
            return Err(bad("--node-name", format!("1 to {MAX_NODE_NAME} characters of [A-Za-z0-9._-]")));
        }
        if !is_label(&self.region, MAX_REGION) {
            return Err(bad("--region", format!("1 to {MAX_REGION} characters of [A-Za-z0-9._-]")));
        }
        souq_proto::limits::check_join_token(&self.join_token).map_err(|e| bad("--join-token", e))?;
        check_grpc_url("--control-plane-url", &self.control_plane_url)?;
        if let Some(addr) = &self.advertise_addr {
            check_grpc_url("--advertise-addr", addr)?;
            if addr.len() > MAX_ADVERTISE_ADDR {
                return Err(bad("--advertise-addr", format!("must be at most {MAX_ADVERTISE_ADDR} bytes")));
            }
        }
        if let Some(host) = &self.docker_host
            && host.strip_prefix("unix://").is_none_or(str::is_empty)
        {
            return Err(bad("--docker-host", "must be a unix:// socket path"));
        }
        self.check_channel_dir()?;
        self.check_limits()?;
        self.check_capacity()
    }

    fn check_channel_dir(&self) -> Result<(), String> {
        let dir = &self.channel_dir;
        if !dir.is_absolute() {
            return Err(bad("--data-dir", format!("the channel directory {} must be an absolute path", dir.display())));
        }
        let len = dir.as_os_str().len();
        if len > MAX_CHANNEL_DIR {
            return Err(bad(
                "--data-dir",
                format!(
                    "the channel directory {} is {len} bytes; at most {MAX_CHANNEL_DIR} are allowed, because the \
                     sandboxes' Unix sockets live there",
                    dir.display()
                ),
            ));
        }
        Ok(())
    }

    fn check_limits(&self) -> Result<(), String> {
        let l = &self.limits;
        in_range("--sandbox-memory-mb", l.memory_mb, 32..=64 * 1024)?;
        in_range("--sandbox-cpus-milli", u64::from(l.cpus_milli), 10..=64_000)?;
        in_range("--sandbox-pids", u64::from(l.pids), 8..=4096)?;
        in_range("--sandbox-tmpfs-mb", l.tmpfs_mb, 1..=16 * 1024)?;
        in_range("--max-timeout-ms", l.max_timeout_ms, 100..=3_600_000)?;
        in_range("--sandbox-nofile", l.nofile, 16..=1_048_576)?;
        in_range("--sandbox-fsize-mb", l.fsize_mb, 1..=1024 * 1024)?;
        in_range("--output-limit-bytes", wide(l.output_bytes), 1024..=64 * 1024 * 1024)
    }

    fn check_capacity(&self) -> Result<(), String> {
        in_range("--max-concurrent", wide(self.max_concurrent), 1..=1024)?;
        in_range("--queue-depth", wide(self.queue_depth), 0..=100_000)?;
        in_range("--max-concurrent-per-user", wide(self.max_concurrent_per_user), 1..=1024)?;
        let p = &self.pool;
        in_range("--pool-size", wide(p.size), 0..=64)?;
        in_range("--pool-max-uses", u64::from(p.max_uses), 1..=1_000_000)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&p.idle_ttl) {
            return Err(bad("--pool-idle-s", format!("{} s is outside 1..=86400", p.idle_ttl.as_secs_f64())));
        }
        in_range("--pool-max-sessions", wide(p.max_sessions), 1..=10_000)?;
        in_range("--cpu-overcommit", u64::from(self.cpu_overcommit), 1..=64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Config {
        Config {
            node_name: "node-1.a_b".into(),
            region: "me-central".into(),
            control_plane_url: "http://127.0.0.1:7000".into(),
            join_token: "0123456789abcdef".into(),
            advertise_addr: Some("http://10.0.0.2:7100".into()),
            docker_host: Some("unix:///var/run/docker.sock".into()),
            images: Images::new(),
            limits: Limits::DEFAULT,
            max_concurrent: 8,
            queue_depth: 32,
            max_concurrent_per_user: DEFAULT_MAX_CONCURRENT_PER_USER,
            pool: PoolConfig::DEFAULT,
            channel_dir: "/var/lib/souq/channels".into(),
            cpu_overcommit: DEFAULT_CPU_OVERCOMMIT,
            grpc_tls: souq_proto::tls::Transport::Insecure,
            metrics: Arc::default(),
            health: tonic_health::server::HealthReporter::new(),
        }
    }

    /// The option named by the error of `cfg`.
    fn option(cfg: &Config) -> String {
        let err = cfg.validate().unwrap_err();
        let rest = err.strip_prefix("invalid value for ").unwrap_or_else(|| panic!("{err}"));
        rest.split(':').next().unwrap().to_owned()
    }

    #[test]
    fn the_defaults_pass() {
        assert_eq!(good().validate(), Ok(()));
        let pool = PoolConfig { size: 0, ..PoolConfig::DEFAULT };
        let minimal = Config { advertise_addr: None, docker_host: None, pool, ..good() };
        assert_eq!(minimal.validate(), Ok(()));
    }

    #[test]
    fn each_bad_value_names_its_option() {
        let cases: Vec<(Config, &str)> = vec![
            (Config { node_name: String::new(), ..good() }, "--node-name"),
            (Config { node_name: "a b".into(), ..good() }, "--node-name"),
            (Config { node_name: "n".repeat(MAX_NODE_NAME + 1), ..good() }, "--node-name"),
            (Config { region: String::new(), ..good() }, "--region"),
            (Config { region: "r".repeat(MAX_REGION + 1), ..good() }, "--region"),
            (Config { control_plane_url: "127.0.0.1:7000".into(), ..good() }, "--control-plane-url"),
            (Config { control_plane_url: "http://".into(), ..good() }, "--control-plane-url"),
            (Config { control_plane_url: "http://a b".into(), ..good() }, "--control-plane-url"),
            (Config { advertise_addr: Some("grpc://x".into()), ..good() }, "--advertise-addr"),
            (Config { advertise_addr: Some(format!("http://{}", "a".repeat(MAX_ADVERTISE_ADDR))), ..good() }, "--advertise-addr"),
            (Config { docker_host: Some("tcp://127.0.0.1:2375".into()), ..good() }, "--docker-host"),
            (Config { docker_host: Some("unix://".into()), ..good() }, "--docker-host"),
            (Config { channel_dir: "channels".into(), ..good() }, "--data-dir"),
            (Config { channel_dir: PathBuf::from("/").join("d".repeat(MAX_CHANNEL_DIR)), ..good() }, "--data-dir"),
            (Config { limits: Limits { memory_mb: 16, ..Limits::DEFAULT }, ..good() }, "--sandbox-memory-mb"),
            (Config { limits: Limits { max_timeout_ms: 0, ..Limits::DEFAULT }, ..good() }, "--max-timeout-ms"),
            (Config { limits: Limits { output_bytes: 10, ..Limits::DEFAULT }, ..good() }, "--output-limit-bytes"),
            (Config { max_concurrent: 0, ..good() }, "--max-concurrent"),
            (Config { queue_depth: 100_001, ..good() }, "--queue-depth"),
            (Config { max_concurrent_per_user: 0, ..good() }, "--max-concurrent-per-user"),
            (Config { max_concurrent_per_user: 1025, ..good() }, "--max-concurrent-per-user"),
            (Config { pool: PoolConfig { size: 65, ..PoolConfig::DEFAULT }, ..good() }, "--pool-size"),
            (Config { pool: PoolConfig { max_uses: 0, ..PoolConfig::DEFAULT }, ..good() }, "--pool-max-uses"),
            (Config { pool: PoolConfig { idle_ttl: Duration::from_millis(500), ..PoolConfig::DEFAULT }, ..good() }, "--pool-idle-s"),
            (Config { pool: PoolConfig { max_sessions: 0, ..PoolConfig::DEFAULT }, ..good() }, "--pool-max-sessions"),
            (Config { cpu_overcommit: 0, ..good() }, "--cpu-overcommit"),
        ];
        for (cfg, want) in cases {
            assert_eq!(option(&cfg), want, "{cfg:?}");
        }
    }

    #[test]
    fn a_bad_join_token_is_refused_and_never_echoed() {
        for token in ["", "short", "sixteen chars ok", "sixteen-chars-ok\n"] {
            let cfg = Config { join_token: token.into(), ..good() };
            let err = cfg.validate().unwrap_err();
            assert!(err.starts_with("invalid value for --join-token:"), "{err}");
            assert!(token.is_empty() || !err.contains(token), "{err}");
        }
    }
}
