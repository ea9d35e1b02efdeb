//! Starting each role: validated config in, libraries' `run` functions out.
use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{io::{AsyncReadExt, AsyncWriteExt}, net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use souq_proto::{metrics::Registry, tls::Role};
use tonic_health::server::HealthReporter;

use crate::{telemetry::TelemetryArgs, config::{self, AgentArgs, ConfigError, ControlPlaneArgs, DbArgs, EdgeArgs, UpArgs}};

/// How long in-flight work may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// Writes the runtime sources into the data dir and learns (and, if the Engine is up,
/// builds) the runtime images.
async fn runtime_images(data_dir: &Path, docker_host: Option<&str>) -> anyhow::Result<souq_node_agent::Images> {
    let dir = data_dir.join("runtimes");
    souq_node_agent::images::write_sources(&dir)?;
    match souq_node_agent::docker::connect(docker_host) {
        Ok(d) if souq_node_agent::docker::ping(&d).await => {
            Ok(souq_node_agent::images::build_missing(&d, &dir).await?)
        }
        _ => {
            warn!("Docker Engine unreachable: runtime images not checked; executes will fail until it is back");
            Ok(souq_node_agent::images::tags(&dir).await?)
        }
    }
}

fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The admin token of `souq up`: the one in `path`, or 32 random bytes in hex written
/// there first, readable by this user alone.
fn admin_token(path: &Path) -> Result<String, ConfigError> {
    use std::{io::{Read, Write}, os::unix::fs::OpenOptionsExt};
    if let Some(token) = crate::node::read_token_file(path)? {
        return Ok(token);
    }
    let fail = |e: std::io::Error| ConfigError(format!("cannot write the admin token to {}: {e}", path.display()));
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).map_err(fail)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(fail)?;
    file.write_all(format!("{token}\n").as_bytes()).map_err(fail)?;
    Ok(token)
}

/// The metrics of the roles this process runs, registered in one registry.
#[derive(Default)]
struct ProcessMetrics {
    registry: Registry,
}

impl ProcessMetrics {
    fn control_plane(&mut self) -> Arc<souq_control_plane::metrics::Metrics> {
        Arc::new(souq_control_plane::metrics::Metrics::register(&mut self.registry))
    }
    fn agent(&mut self) -> Arc<souq_node_agent::metrics::Metrics> {
        Arc::new(souq_node_agent::metrics::Metrics::register(&mut self.registry))
    }
    fn edge(&mut self) -> Arc<souq_edge_proxy::metrics::Metrics> {
        Arc::new(souq_edge_proxy::metrics::Metrics::register(&mut self.registry))
    }

    /// Serves the registry on `--metrics-addr` when it is set; otherwise hands it back for
    /// the edge to serve on its own port (`None` for roles without one).
    async fn serve(
        self,
        telemetry: &TelemetryArgs,
        health: HealthReporter,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Arc<Registry>>> {
        let registry = Arc::new(self.registry);
        let Some(addr) = telemetry.metrics_addr else { return Ok(Some(registry)) };
        let listener = bind(addr, "metrics (--metrics-addr)").await?;
        tasks.spawn(crate::metrics_port::serve(listener, registry, health, shutdown.clone()));
        Ok(None)
    }
}

/// Waits for all tasks; after `shutdown`, gives them [`GRACE`] to finish.
async fn supervise(mut tasks: JoinSet<anyhow::Result<()>>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut first_error = None;
    loop {
        let next = tokio::select! {
            r = tasks.join_next() => r,
            () = shutdown.cancelled(), if !shutdown.is_cancelled() => continue,
            () = tokio::time::sleep(GRACE), if shutdown.is_cancelled() => {
                warn!("grace period over; exiting with work in flight");
                break;
            }
        };
        match next {
            None => break,
            Some(Ok(Ok(()))) => shutdown.cancel(),
            Some(Ok(Err(e))) => {
                tracing::error!(error = %format!("{e:#}"), "a role failed; shutting down");
                first_error.get_or_insert(e);
                shutdown.cancel();
            }
            Some(Err(e)) => {
                first_error.get_or_insert(anyhow::anyhow!("task panicked: {e}"));
                shutdown.cancel();
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Polls the edge's `/readyz` until it answers 200.
async fn wait_ready(addr: std::net::SocketAddr, shutdown: &CancellationToken) -> bool {
    while !shutdown.is_cancelled() {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            if s.write_all(req.as_bytes()).await.is_ok() && s.read_to_end(&mut buf).await.is_ok() && buf.starts_with(b"HTTP/1.1 200") {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `souq up`: every role in one process.
pub async fn up(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Every role's options are checked before anything is built or bound; the addresses
    // the roles find each other at are placeholders until the listeners are bound.
    let join_token = random_token();
    let placeholder = "http://127.0.0.1:1".to_owned();
    let mut cp_cfg = args.mail.control_plane_config(
        &args.db,
        args.db.data_dir.join("jwt-ed25519.pem"),
        join_token.clone(),
        args.mail.public_url.clone().unwrap_or_else(|| format!("http://{}", args.edge_addr)),
        args.max_replicas,
    )?;
    args.quotas.apply(&mut cp_cfg)?;
    args.timing.apply(&mut cp_cfg)?;
    let mut edge_cfg = souq_edge_proxy::Config::new(placeholder.clone(), join_token.clone());
    args.meter.apply(&mut edge_cfg)?;
    args.limits.apply(&mut edge_cfg);
    edge_cfg.validate().map_err(ConfigError)?;
    let mut agent_cfg = args.sandbox.agent_config(config::AgentBase {
        node_name: args.node_name.clone().unwrap_or_else(|| format!("up-{}", config::hostname())),
        region: "local".into(),
        control_plane_url: placeholder,
        join_token: join_token.clone(),
        advertise_addr: None,
        data_dir: args.db.data_dir.clone(),
    })?;
    // A new embedded database starts its leases at epoch 0; the agent would refuse every
    // command from it while it remembers the epochs of a database that is gone.
    if args.db.database_url.is_none() && !args.db.data_dir.join("souq.db").exists() {
        let epoch_file = args.db.data_dir.join("channels.epoch");
        if epoch_file.exists() {
            std::fs::remove_file(&epoch_file).with_context(|| format!("removing {}", epoch_file.display()))?;
            info!(file = %epoch_file.display(), "new database: the agent's remembered control-plane epoch is reset");
        }
    }
    args.db.prepare()?;
    let admin_token_file = args.db.data_dir.join("admin-token");
    cp_cfg.admin_token = Some(admin_token(&admin_token_file)?);
    cp_cfg.validate().map_err(|e| ConfigError(format!("{e} (in {})", admin_token_file.display())))?;
    // Mutual TLS between the roles, as when they run apart: a CA in the data dir.
    [cp_cfg.grpc_tls, agent_cfg.grpc_tls, edge_cfg.grpc_tls] = crate::certs::up(&args.db.data_dir)?;
    agent_cfg.images = runtime_images(&args.db.data_dir, args.sandbox.docker_host.as_deref()).await?;
    let mut metrics = ProcessMetrics::default();
    (cp_cfg.metrics, agent_cfg.metrics, edge_cfg.metrics) = (metrics.control_plane(), metrics.agent(), metrics.edge());

    let cp_listener = bind("127.0.0.1:0".parse()?, "control plane").await?;
    let agent_listener = bind("127.0.0.1:0".parse()?, "node agent").await?;
    let edge_listener = bind(args.edge_addr, "edge (--edge-addr)").await?;
    let edge_addr = edge_listener.local_addr()?;
    let cp_url = format!("http://{}", cp_listener.local_addr()?);

    if args.mail.public_url.is_none() {
        cp_cfg.public_url = format!("http://{edge_addr}");
    }
    agent_cfg.control_plane_url = cp_url.clone();
    // The edge stops first and the rest after it, so its last usage report still finds
    // the control plane.
    let backend = CancellationToken::new();
    let mut tasks = JoinSet::new();
    edge_cfg.exposition = metrics.serve(&args.telemetry, cp_cfg.health.clone(), &mut tasks, &backend).await?;
    let s = backend.clone();
    tasks.spawn(async move { souq_control_plane::run(cp_cfg, cp_listener, s).await.context("control plane") });
    let s = backend.clone();
    tasks.spawn(async move { souq_node_agent::run(agent_cfg, agent_listener, s).await.context("node agent") });
    let s = shutdown.clone();
    edge_cfg.control_plane_url = cp_url;
    tasks.spawn(async move {
        let done = souq_edge_proxy::run(edge_cfg, edge_listener, s).await.context("edge");
        backend.cancel();
        done
    });

    let ready_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if wait_ready(edge_addr, &ready_shutdown).await {
            println!("edge listening on http://{edge_addr}");
            println!("admin token (for `souq node list`) in {}", admin_token_file.display());
        }
    });
    supervise(tasks, shutdown).await
}

/// `souq control-plane`.
pub async fn control_plane(args: ControlPlaneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let key = args.signing_key_file.clone().unwrap_or_else(|| args.db.data_dir.join("jwt-ed25519.pem"));
    // Every other option is checked first; then a missing --public-url gets its own message.
    let public_url = args.mail.public_url.clone().unwrap_or_else(|| "http://public-url.invalid".into());
    let mut cfg = args.mail.control_plane_config(&args.db, key, args.join_token.clone(), public_url, args.max_replicas)?;
    args.quotas.apply(&mut cfg)?;
    cfg.admin_token.clone_from(&args.admin_token);
    args.timing.apply(&mut cfg)?;
    if cfg.admin_token.is_none() {
        info!("no --admin-token: the admin endpoints (souq node …) answer 403");
    }
    cfg.grpc_tls = args.grpc.transport(Role::ControlPlane)?;
    if args.mail.public_url.is_none() {
        return Err(ConfigError("missing --public-url: mail links are built from it".into()).into());
    }
    args.db.prepare()?;
    let mut metrics = ProcessMetrics::default();
    cfg.metrics = metrics.control_plane();
    let listener = bind(args.grpc_addr, "control plane (--grpc-addr)").await?;
    let mut tasks = JoinSet::new();
    metrics.serve(&args.telemetry, cfg.health.clone(), &mut tasks, &shutdown).await?;
    let s = shutdown.clone();
    tasks.spawn(async move { souq_control_plane::run(cfg, listener, s).await.context("control plane") });
    supervise(tasks, shutdown).await
}

/// `souq agent`.
pub async fn agent(args: AgentArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut cfg = args.sandbox.agent_config(config::AgentBase {
        node_name: args.node_name.clone().unwrap_or_else(config::hostname),
        region: args.region.clone(),
        control_plane_url: args.control_plane_url.clone(),
        join_token: args.join_token.clone(),
        advertise_addr: args.advertise_addr.clone(),
        data_dir: args.data_dir.clone(),
    })?;
    cfg.grpc_tls = args.grpc.transport(Role::Agent)?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| ConfigError(format!("invalid value for --data-dir: {}: {e}", args.data_dir.display())))?;
    cfg.images = runtime_images(&args.data_dir, args.sandbox.docker_host.as_deref()).await?;
    let mut metrics = ProcessMetrics::default();
    cfg.metrics = metrics.agent();
    let listener = bind(args.agent_addr, "node agent (--agent-addr)").await?;
    let mut tasks = JoinSet::new();
    metrics.serve(&args.telemetry, cfg.health.clone(), &mut tasks, &shutdown).await?;
    let s = shutdown.clone();
    tasks.spawn(async move { souq_node_agent::run(cfg, listener, s).await.context("node agent") });
    supervise(tasks, shutdown).await
}

/// `souq edge`.
pub async fn edge(args: EdgeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut cfg = souq_edge_proxy::Config::new(args.control_plane_url, args.join_token);
    args.meter.apply(&mut cfg)?;
    args.limits.apply(&mut cfg);
    cfg.edge_id = args.edge_id;
    cfg.validate().map_err(ConfigError)?;
    cfg.grpc_tls = args.grpc.transport(Role::Edge)?;
    let mut metrics = ProcessMetrics::default();
    cfg.metrics = metrics.edge();
    let listener = bind(args.edge_addr, "edge (--edge-addr)").await?;
    let mut tasks = JoinSet::new();
    cfg.exposition = metrics.serve(&args.telemetry, HealthReporter::new(), &mut tasks, &shutdown).await?;
    let s = shutdown.clone();
    tasks.spawn(async move { souq_edge_proxy::run(cfg, listener, s).await.context("edge") });
    supervise(tasks, shutdown).await
}

/// `souq migrate`.
pub async fn migrate(args: DbArgs) -> anyhow::Result<()> {
    let url = args.url()?;
    args.prepare()?;
    let db = souq_control_plane::connect(&url).await?;
    souq_control_plane::migrate(&db).await?;
    info!("migrations applied");
    Ok(())
}
