//! A whole Souq cluster started in-process for tests: control plane, node agents and
//! edge on 127.0.0.1:0, on SQLite or (with `SOUQ_TEST_PG_URL`) a fresh PostgreSQL
//! database, against the real Docker Engine.
#![allow(clippy::unwrap_used)]

pub mod apis;
pub mod attack;
pub mod redis;
pub mod mail;

use std::{path::PathBuf, process::Command, sync::Arc, time::Duration};

use souq_control_plane::ManualClock;

use serde_json::{Value, json};
use souq_node_agent::{Images, Limits};
use souq_proto::tls::{self, Transport};
use tokio::{net::TcpListener, sync::OnceCell, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The PostgreSQL URL template; `{db}` is replaced by the database name.
pub const PG_ENV: &str = "SOUQ_TEST_PG_URL";

static IMAGES: OnceCell<Images> = OnceCell::const_new();

/// The runtime images, built once per test binary if missing.
pub async fn images() -> Images {
    IMAGES
        .get_or_init(|| async {
            let dir = std::env::temp_dir().join("souq-test-runtimes");
            souq_node_agent::images::write_sources(&dir).unwrap();
            let docker = souq_node_agent::docker::connect(None).unwrap();
            souq_node_agent::images::build_missing(&docker, &dir).await.unwrap()
        })
        .await
        .clone()
}

/// The per-user cap of the harness's agents unless a test sets one ([`Builder::per_user`]):
/// the most the agent accepts, so tests that burst from one user meet the node's own
/// slots and queue. `souq agent`'s default is 2.
pub const NO_PER_USER_CAP: usize = 1024;

/// How to start a cluster.
pub struct Builder {
    agents: usize,
    pool: souq_node_agent::PoolConfig,
    max_concurrent: usize,
    queue_depth: usize,
    max_concurrent_per_user: usize,
    smtp_url: String,
    docker_host: Option<String>,
    limits: Limits,
    regions: Vec<String>,
    heartbeat: Duration,
    call_timeout: Option<Duration>,
    redis_url: Option<String>,
    quotas: Option<souq_control_plane::Quotas>,
    insecure_grpc: bool,
    admin_token: Option<String>,
    control_planes: usize,
}

/// A role's task and its own shutdown switch.
struct Role {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Role {
    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.task).await;
    }
}

/// A running cluster.
pub struct TestCluster {
    /// `http://127.0.0.1:PORT` of the edge.
    pub url: String,
    /// Names of the agents' nodes (unique per test).
    pub nodes: Vec<String>,
    /// gRPC URLs of the agents.
    pub agent_urls: Vec<String>,
    /// gRPC URL of the control plane.
    pub control_plane_url: String,
    /// The control plane's clock; it moves only when a test advances it.
    pub clock: Arc<ManualClock>,
    /// The database the control plane uses.
    pub database_url: String,
    /// The data dir (signing key, SQLite).
    pub data_dir: PathBuf,
    /// The CA and the roles' certificates of the internal gRPC links.
    pub tls_dir: PathBuf,
    /// The HTTP client.
    pub http: reqwest::Client,
    cp: Option<Role>,
    /// Control planes besides `cp` on the same database ([`Builder::control_planes`]).
    extra_cps: Vec<Role>,
    agents: Vec<Role>,
    agent_cfgs: Vec<souq_node_agent::Config>,
    edge: Option<Role>,
    edge_cfg: souq_edge_proxy::Config,
    pg_db: Option<String>,
}

impl TestCluster {
    /// A builder for one agent with the default limits.
    pub fn builder() -> Builder {
        // By default no sandbox waits and none is reused, so a test sees exactly the
        // containers its own runs make; tests of warm execution ask for a pool.
        let pool = souq_node_agent::PoolConfig { size: 0, max_uses: 1, ..Default::default() };
        Builder { agents: 1, pool, max_concurrent: 8, queue_depth: 32, max_concurrent_per_user: NO_PER_USER_CAP, smtp_url: mail::SMTP_URL.into(), docker_host: None, limits: Limits::default(), regions: Vec::new(), heartbeat: Duration::from_millis(500), call_timeout: None, redis_url: None, quotas: None, insecure_grpc: false, admin_token: None, control_planes: 1 }
    }
}

impl Builder {
    /// How many agents to start.
    pub fn agents(mut self, n: usize) -> Self {
        self.agents = n;
        self
    }

    /// Points the agents at a Docker socket (e.g. one that does not exist).
    pub fn docker_host(mut self, host: &str) -> Self {
        self.docker_host = Some(host.into());
        self
    }

    /// Sends mail through another SMTP server than the test sink.
    pub fn smtp_url(mut self, url: &str) -> Self {
        self.smtp_url = url.into();
        self
    }

    /// Sets how many sandboxes an agent runs at once and how many executes may wait.
    pub fn capacity(mut self, running: usize, queue: usize) -> Self {
        self.max_concurrent = running;
        self.queue_depth = queue;
        self
    }

    /// Sets how many executes one user may have on an agent at once, running or waiting.
    pub fn per_user(mut self, n: usize) -> Self {
        self.max_concurrent_per_user = n;
        self
    }

    /// Keeps `size` warm sandboxes per runtime, each serving one user up to `max_uses` runs.
    pub fn warm(mut self, size: usize, max_uses: u32) -> Self {
        self.pool.size = size;
        self.pool.max_uses = max_uses;
        self
    }

    /// Sets the agents' sandbox limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the agents' longest execute.
    pub fn max_timeout_ms(mut self, ms: u64) -> Self {
        self.limits.max_timeout_ms = ms;
        self
    }

    /// Gives agent i the region `regions[i]` (the others: `test`).
    pub fn regions(mut self, regions: &[&str]) -> Self {
        self.regions = regions.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// Sets the wall timeout of one call to a deployed API (and of an execute that names none).
    pub fn call_timeout(mut self, t: Duration) -> Self {
        self.call_timeout = Some(t);
        self
    }

    /// Meters and rate-limits in this Redis instead of in memory.
    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Runs the internal gRPC links in plain text, as `--insecure-grpc` does (mutual TLS
    /// otherwise, as `souq up` sets it up).
    pub fn insecure_grpc(mut self) -> Self {
        self.insecure_grpc = true;
        self
    }

    /// Runs `n` control planes on the one database (PostgreSQL: SQLite allows one). The
    /// extra ones start first, and the cluster waits until one of them leads; the agents
    /// and the edge talk to the last one, `control_plane_url`, a follower at first.
    pub fn control_planes(mut self, n: usize) -> Self {
        self.control_planes = n.max(1);
        self
    }

    /// Sets the control plane's per-user quotas (the defaults otherwise).
    pub fn quotas(mut self, quotas: souq_control_plane::Quotas) -> Self {
        self.quotas = Some(quotas);
        self
    }

    /// Gives the control plane this admin token (none otherwise: admin calls get 403).
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// Starts every role and waits until the edge is ready and the agents registered.
    pub async fn start(self) -> TestCluster {
        let id = Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("souq-test-{id}"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let (database_url, pg_db) = match std::env::var(PG_ENV) {
            Ok(template) => {
                let name = format!("souq_test_{id}");
                let admin = souq_control_plane::connect(&template.replace("{db}", "postgres")).await.unwrap();
                sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE {name}")).await.unwrap();
                (template.replace("{db}", &name), Some(name))
            }
            Err(_) => (format!("sqlite://{}?mode=rwc", data_dir.join("souq.db").display()), None),
        };
        let join_token = format!("test-join-token-{id}");
        // Mutual TLS between the roles, as `souq up` sets it up: a CA in the data dir and
        // a certificate per role (one per agent, each its own identity).
        let tls_dir = data_dir.join("tls");
        let pki = tls::Pki::open_or_create(&tls_dir).unwrap();
        let insecure = self.insecure_grpc;
        let issue = |role: tls::Role, name: &str| {
            if insecure { Transport::Insecure } else { pki.issue(role, name, 30).unwrap().load().unwrap() }
        };

        let cp_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cp_url = format!("http://{}", cp_listener.local_addr().unwrap());
        let edge_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", edge_listener.local_addr().unwrap());
        let clock = Arc::new(ManualClock::new());
        let mut cfg = souq_control_plane::Config::new(
            database_url.clone(),
            data_dir.join("jwt.pem"),
            join_token.clone(),
            url.clone(),
            data_dir.join("mail"),
        );
        cfg.mail = souq_control_plane::MailConfig::Smtp(self.smtp_url.clone());
        cfg.clock = clock.clone();
        cfg.grpc_tls = issue(tls::Role::ControlPlane, "control-plane");
        // Agents report often, so a lost instance is noticed within a second or two.
        cfg.heartbeat_interval = self.heartbeat;
        if let Some(t) = self.call_timeout {
            cfg.default_timeout = t;
        }
        if let Some(q) = self.quotas {
            cfg.quotas = q;
        }
        cfg.admin_token.clone_from(&self.admin_token);
        let mut extra_cps = Vec::new();
        for _ in 1..self.control_planes {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (cfg, stop) = (cfg.clone(), CancellationToken::new());
            let s = stop.clone();
            extra_cps.push(Role { stop, task: tokio::spawn(async move { souq_control_plane::run(cfg, listener, s).await.unwrap() }) });
        }
        if !extra_cps.is_empty() {
            wait_for_leader(&database_url).await;
        }
        let stop = CancellationToken::new();
        let s = stop.clone();
        let cp = Role {
            stop,
            task: tokio::spawn(async move { souq_control_plane::run(cfg, cp_listener, s).await.unwrap() }),
        };

        let images = if self.docker_host.is_some() { Images::new() } else { images().await };
        let images = if images.is_empty() {
            let dir = data_dir.join("runtimes");
            souq_node_agent::images::write_sources(&dir).unwrap();
            souq_node_agent::images::tags(&dir).await.unwrap()
        } else {
            images
        };
        let mut agents = Vec::new();
        let mut agent_cfgs = Vec::new();
        let mut nodes = Vec::new();
        let mut agent_urls = Vec::new();
        for i in 0..self.agents {
            let name = format!("test-{id}-{i}");
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            agent_urls.push(format!("http://{}", listener.local_addr().unwrap()));
            let cfg = souq_node_agent::Config {
                node_name: name.clone(),
                region: self.regions.get(i).cloned().unwrap_or_else(|| "test".into()),
                control_plane_url: cp_url.clone(),
                join_token: join_token.clone(),
                advertise_addr: None,
                docker_host: self.docker_host.clone(),
                images: images.clone(),
                limits: self.limits.clone(),
                max_concurrent: self.max_concurrent,
                queue_depth: self.queue_depth,
                max_concurrent_per_user: self.max_concurrent_per_user,
                pool: self.pool.clone(),
                channel_dir: data_dir.join(format!("channels-{i}")),
                cpu_overcommit: souq_node_agent::DEFAULT_CPU_OVERCOMMIT,
                metrics: Default::default(),
                health: Default::default(),
                grpc_tls: issue(tls::Role::Agent, &format!("agent-{i}")),
            };
            agent_cfgs.push(cfg.clone());
            agents.push(start_agent(cfg, listener));
            nodes.push(name);
        }

        let stop = CancellationToken::new();
        let s = stop.clone();
        let mut edge_cfg = souq_edge_proxy::Config::new(cp_url.clone(), join_token.clone());
        edge_cfg.revocation_poll = Duration::from_millis(200);
        edge_cfg.redis_url = self.redis_url.clone();
        edge_cfg.edge_id = Some(format!("test-edge-{id}"));
        edge_cfg.grpc_tls = issue(tls::Role::Edge, "edge");
        let cfg = edge_cfg.clone();
        let edge = Role { stop, task: tokio::spawn(async move { souq_edge_proxy::run(cfg, edge_listener, s).await.unwrap() }) };
        let cluster = TestCluster {
            url,
            nodes,
            agent_urls,
            control_plane_url: cp_url,
            clock,
            database_url,
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap(),
            cp: Some(cp),
            extra_cps,
            agents,
            agent_cfgs,
            edge: Some(edge),
            edge_cfg,
            data_dir,
            tls_dir,
            pg_db,
        };
        cluster.wait_ready().await;
        cluster
    }
}

impl TestCluster {
    /// A new certificate of `role` from the cluster's CA, with a key of its own (a new
    /// identity) unless `name` was issued before.
    pub fn issue(&self, role: tls::Role, name: &str) -> Transport {
        let pki = tls::Pki::open_or_create(&self.tls_dir).unwrap();
        pki.issue(role, name, 30).unwrap().load().unwrap()
    }

    /// A channel to the gRPC server at `url`, which holds a `server` certificate, dialed
    /// over `transport`.
    pub fn channel(transport: &Transport, url: &str, server: tls::Role) -> tonic::transport::Channel {
        transport.endpoint(url, server).unwrap().connect_timeout(Duration::from_secs(5)).connect_lazy()
    }

    async fn wait_ready(&self) {
        for _ in 0..300 {
            let ready = self.http.get(format!("{}/readyz", self.url)).send().await.is_ok_and(|r| r.status() == 200);
            if ready {
                // Agents register on start; give them the moment they need.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster did not become ready in 30 s");
    }

    /// A fresh, unique email address.
    pub fn email() -> String {
        format!("u-{}@example.com", Uuid::new_v4().simple())
    }

    /// A fresh user with a verified address, who may deploy and create keys; returns the
    /// access token.
    pub async fn user(&self) -> String {
        self.verified_user().await
    }

    /// Signs up and logs in a fresh user without verifying the address: they may execute
    /// and create APIs, but not publish, deploy or create keys. Returns the access token.
    pub async fn unverified_user(&self) -> String {
        let email = Self::email();
        let pw = "a long enough password";
        let r = self.post("/api/v1/auth/signup", None, json!({"email": email, "password": pw})).await;
        assert_eq!(r.0, 202, "{}", r.1);
        let (status, body) = self.post("/api/v1/auth/login", None, json!({"email": email, "password": pw})).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Signs up a fresh user, follows the verification link from the real mail, and logs
    /// in; returns the access token.
    pub async fn verified_user(&self) -> String {
        let email = Self::email();
        let pw = "a long enough password";
        let r = self.post("/api/v1/auth/signup", None, json!({"email": email, "password": pw})).await;
        assert_eq!(r.0, 202, "{}", r.1);
        let mails = mail::wait_for(&email, 1, Duration::from_secs(30)).await;
        let link = mail::link_containing(&mails[0].text, "/api/v1/auth/verify-email/").expect("no verify link");
        assert_eq!(self.http.get(&link).send().await.unwrap().status(), 200);
        let (status, body) = self.post("/api/v1/auth/login", None, json!({"email": email, "password": pw})).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Sends JSON with `method`; returns the status and the body (JSON, or a string if
    /// not JSON).
    pub async fn send_json(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::answer(req.send().await.unwrap()).await
    }

    /// POSTs JSON.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::POST, path, token, body).await
    }

    /// PUTs JSON.
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PUT, path, token, body).await
    }

    /// PATCHes JSON.
    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.send_json(reqwest::Method::PATCH, path, token, body).await
    }

    /// DELETEs a path.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (s, _, b) = self.request("DELETE", path, token, &[], Vec::new()).await;
        (s, b)
    }

    /// GETs a path.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::answer(req.send().await.unwrap()).await
    }

    /// Sends any request with an optional bearer token; returns status, headers and body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.url)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let head = resp.headers().clone();
        let (status, body) = Self::answer(resp).await;
        (status, head, body)
    }

    /// Runs a snippet and returns status and body.
    pub async fn execute(&self, token: &str, body: Value) -> (u16, Value) {
        self.post("/api/v1/execute", Some(token), body).await
    }

    async fn answer(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The cluster's join token.
    pub fn join_token(&self) -> &str {
        &self.edge_cfg.join_token
    }

    /// The edge's test hook that makes its usage flusher die at a chosen point.
    pub fn flush_faults(&self) -> &souq_edge_proxy::meter::flush::FlushFaults {
        &self.edge_cfg.flush_faults
    }

    /// Kills the edge as a crash would: its task and every task it owns are aborted, with
    /// no graceful shutdown and no last flush.
    pub async fn crash_edge(&mut self) {
        if let Some(e) = self.edge.take() {
            e.task.abort();
            let _ = e.task.await;
        }
    }

    /// Starts the edge again on its address, with the same edge id (and so the same
    /// metering stream).
    pub async fn start_edge(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind(&addr).await.unwrap();
        let (cfg, stop) = (self.edge_cfg.clone(), CancellationToken::new());
        let s = stop.clone();
        self.edge = Some(Role { stop, task: tokio::spawn(async move { souq_edge_proxy::run(cfg, listener, s).await.unwrap() }) });
        self.wait_ready().await;
    }

    /// Stops the control plane (the edge and agents keep running).
    pub async fn stop_control_plane(&mut self) {
        if let Some(cp) = self.cp.take() {
            cp.stop().await;
        }
    }

    /// Stops the control planes besides the one the agents and the edge talk to.
    pub async fn stop_extra_control_planes(&mut self) {
        for cp in self.extra_cps.drain(..) {
            cp.stop().await;
        }
    }

    /// Stops agent `i` and starts it again with the same name, on a new port. Like any
    /// agent start, it removes its node's leftover containers.
    pub async fn restart_agent(&mut self, i: usize) {
        self.agents.remove(i).stop().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.agent_urls[i] = format!("http://{}", listener.local_addr().unwrap());
        self.agents.insert(i, start_agent(self.agent_cfgs[i].clone(), listener));
    }

    /// Stops agent `i` for good (gracefully: its instances' containers go with it); its
    /// node stops heartbeating and, past the node TTL, is down.
    pub async fn stop_agent(&mut self, i: usize) {
        let gone = Role { stop: CancellationToken::new(), task: tokio::spawn(async {}) };
        std::mem::replace(&mut self.agents[i], gone).stop().await;
    }

    /// Stops every agent.
    pub async fn stop_agents(&mut self) {
        for a in self.agents.drain(..) {
            a.stop().await;
        }
    }

    /// Containers of this cluster's nodes, running or not.
    pub fn containers(&self) -> Vec<String> {
        self.nodes.iter().flat_map(|n| containers_of(n)).collect()
    }

    /// Stops every role and asserts that no container of this cluster is left.
    pub async fn stop(mut self) {
        if let Some(e) = self.edge.take() {
            e.stop().await;
        }
        self.stop_agents().await;
        self.stop_extra_control_planes().await;
        self.stop_control_plane().await;
        let left = self.containers();
        assert!(left.is_empty(), "containers left behind: {left:?}");
    }
}

/// Waits (at most 30 s) until a control plane on `database_url` holds the leader lease.
async fn wait_for_leader(database_url: &str) {
    use sea_orm::EntityTrait;
    let db = souq_control_plane::connect(database_url).await.unwrap();
    for _ in 0..300 {
        let lease = souq_control_plane::entity::leases::Entity::find_by_id(souq_control_plane::leader::LEASE.to_owned())
            .one(&db)
            .await
            .ok()
            .flatten();
        if lease.is_some_and(|l| l.epoch > 0) {
            let _ = db.close().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no control plane took the leader lease in 30 s");
}

fn start_agent(cfg: souq_node_agent::Config, listener: TcpListener) -> Role {
    let stop = CancellationToken::new();
    let s = stop.clone();
    Role { stop, task: tokio::spawn(async move { souq_node_agent::run(cfg, listener, s).await.unwrap() }) }
}

/// Ids of the containers labelled with a node name.
pub fn containers_of(node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=souq.node={node}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Runs even when a test panics: nothing of the test may outlive it.
        let extra: Vec<Role> = self.extra_cps.drain(..).collect();
        for role in [self.cp.take(), self.edge.take()].into_iter().flatten().chain(self.agents.drain(..)).chain(extra) {
            role.stop.cancel();
            role.task.abort();
        }
        for node in &self.nodes {
            let ids = containers_of(node);
            if !ids.is_empty() {
                let _ = Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let (Some(db), Ok(_)) = (&self.pg_db, std::env::var(PG_ENV)) {
            let _ = Command::new("psql")
                .args(["-h", "/var/run/postgresql", "-d", "postgres", "-q", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .output();
        }
    }
}
