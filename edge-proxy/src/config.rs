//! The edge's configuration, and [`Config::validate`]: the one check of it, which the
//! caller runs before binding any port.
use std::{sync::Arc, time::Duration};

use crate::{client_addr::TrustedProxies, edge_id, metrics, tls};

/// Default largest body of a call to a deployed API, in bytes.
pub const DEFAULT_CALL_BODY_LIMIT: usize = 1024 * 1024;
/// Largest `call_body_limit` allowed: base64 of a binary body grows it by a third, and
/// the event must stay within the agents' 4 MiB gRPC message limit.
pub const MAX_CALL_BODY_LIMIT: usize = 2 * 1024 * 1024;
/// Longest `flush_interval` allowed: usage older than this is not "near real time".
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// Default longest wait for a request's headers (see [`Config::header_read_timeout`]).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest a request body may go silent (see [`Config::body_read_timeout`]).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest a write may wait on a client that reads nothing (see
/// [`Config::write_timeout`]).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most connections open at once (see [`Config::max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Longest `header_read_timeout`, `body_read_timeout` and `write_timeout` allowed.
pub const MAX_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest `max_connections` allowed.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

/// The edge's configuration. [`Config::validate`] checks it; `run` refuses one that fails.
#[derive(Clone)]
pub struct Config {
    /// The control plane's gRPC URL (it serves `Accounts`, `Apis`, `Market`, `Execute`,
    /// `Routes` and `Metering`).
    pub control_plane_url: String,
    /// The cluster secret, presented to the control plane's `Routes` and `Metering` and to
    /// the agents.
    pub join_token: String,
    /// How often to fetch token revocations. A password change voids earlier tokens at
    /// the control plane at once, and at this edge within this time.
    pub revocation_poll: Duration,
    /// Largest body of a call to a deployed API, in bytes (413 beyond); at most
    /// [`MAX_CALL_BODY_LIMIT`].
    pub call_body_limit: usize,
    /// Redis for rate limits, quotas and the durable metering stream; in memory when
    /// `None` (the embedded default: a crash loses up to a second of unflushed usage).
    pub redis_url: Option<String>,
    /// This edge's name: its metering stream is `souq:usage:<edge_id>`, and an edge
    /// started again with the same id flushes what the last one left. Unique per live
    /// edge; `None` derives `<hostname>-<listen address>`.
    pub edge_id: Option<String>,
    /// Meter every call and execute, and apply plans' rate limits and quotas. Off only to
    /// measure what they cost.
    pub metering: bool,
    /// How often usage is reported to the control plane (sooner when 1000 events wait).
    pub flush_interval: Duration,
    /// Longest a client may take to send a request's headers (the first request's from
    /// when the connection is accepted); the connection is closed past it.
    pub header_read_timeout: Duration,
    /// Longest a request body may go without sending data; reading it then fails.
    /// Responses (log follows, calls to deployed APIs) are not limited by it.
    pub body_read_timeout: Duration,
    /// Longest a write may wait on a client that reads nothing; the connection is then
    /// closed. A response with nothing to send yet (a quiet log follow) is not limited.
    pub write_timeout: Duration,
    /// Most connections open at once; past it, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// Peers (addresses or CIDRs) whose `X-Forwarded-For` names the client; the
    /// right-most hop that is not itself trusted is taken. Empty: the TCP peer is the
    /// client and `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<String>,
    /// Serve HTTPS with this certificate and key; plain HTTP when `None`.
    pub tls: Option<tls::TlsFiles>,
    /// How the control plane and the agents are dialed: mutual TLS with this edge's
    /// certificate, or plain text (this library's default; `souq` refuses it without
    /// `--insecure-grpc`).
    pub grpc_tls: souq_proto::tls::Transport,
    /// The edge's metrics (fresh and unregistered by default; `souq` registers them).
    pub metrics: Arc<metrics::Metrics>,
    /// The registry `GET /metrics` answers with; `None` (the default) answers 404 there.
    pub exposition: Option<Arc<souq_proto::metrics::Registry>>,
    /// TEST HOOK: fault injection into the usage flusher; inert unless armed. Only in
    /// tests and builds with the `fault-injection` feature.
    #[cfg(any(test, feature = "fault-injection"))]
    pub flush_faults: Arc<crate::meter::flush::FlushFaults>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("control_plane_url", &self.control_plane_url)
            .field("join_token", &"<redacted>")
            .field("revocation_poll", &self.revocation_poll)
            .field("call_body_limit", &self.call_body_limit)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("edge_id", &self.edge_id)
            .field("metering", &self.metering)
            .field("flush_interval", &self.flush_interval)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_connections", &self.max_connections)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("tls", &self.tls)
            .field("grpc_tls", &self.grpc_tls)
            .field("exposition", &self.exposition.is_some())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The defaults, around a control plane URL and the cluster's join token.
    pub fn new(control_plane_url: String, join_token: String) -> Self {
        Config {
            control_plane_url,
            join_token,
            grpc_tls: souq_proto::tls::Transport::Insecure,
            revocation_poll: Duration::from_secs(10),
            call_body_limit: DEFAULT_CALL_BODY_LIMIT,
            redis_url: None,
            edge_id: None,
            metering: true,
            flush_interval: Duration::from_secs(1),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            trusted_proxies: Vec::new(),
            tls: None,
            metrics: Arc::default(),
            exposition: None,
            #[cfg(any(test, feature = "fault-injection"))]
            flush_faults: Arc::default(),
        }
    }

    /// Checks every option without connecting anywhere; the error names the option at
    /// fault (by its command-line flag where it has one) and never echoes a secret.
    pub fn validate(&self) -> Result<(), String> {
        // It travels as gRPC metadata (`authorization: Bearer <token>`).
        souq_proto::limits::check_join_token(&self.join_token).map_err(|e| format!("--join-token {e}"))?;
        check_control_plane_url(&self.control_plane_url)?;
        if let Some(url) = &self.redis_url {
            // Parsing only; the URL may hold a password, so it is never part of the error.
            redis::Client::open(url.as_str())
                .map_err(|e| format!("--redis-url is not a valid Redis URL ({:?})", e.kind()))?;
        }
        if let Some(id) = &self.edge_id {
            edge_id::validate(id).map_err(|e| format!("--edge-id {e}"))?;
        }
        if !(1..=MAX_CALL_BODY_LIMIT).contains(&self.call_body_limit) {
            return Err(format!("call_body_limit must be 1 to {MAX_CALL_BODY_LIMIT} bytes"));
        }
        if self.flush_interval.is_zero() || self.flush_interval > MAX_FLUSH_INTERVAL {
            return Err(format!("flush_interval must be more than 0 and at most {} s", MAX_FLUSH_INTERVAL.as_secs()));
        }
        if self.revocation_poll.is_zero() {
            return Err("revocation_poll must be more than 0".into());
        }
        for (flag, t) in [
            ("--header-read-timeout-s", self.header_read_timeout),
            ("--body-read-timeout-s", self.body_read_timeout),
            ("--write-timeout-s", self.write_timeout),
        ] {
            if t.is_zero() || t > MAX_READ_TIMEOUT {
                return Err(format!("{flag} must be more than 0 and at most {} s", MAX_READ_TIMEOUT.as_secs()));
            }
        }
        if !(1..=MAX_MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!("--max-connections must be 1 to {MAX_MAX_CONNECTIONS}"));
        }
        TrustedProxies::parse(&self.trusted_proxies)?;
        if let Some(files) = &self.tls {
            // Reads the files (no key material in the error), so a bad path or PEM
            // stops the edge before it binds.
            tls::acceptor(files)?;
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL with a host, as a gRPC channel takes it.
fn check_control_plane_url(url: &str) -> Result<(), String> {
    let bad = || format!("--control-plane-url must be an http:// or https:// URL with a host, not {url:?}");
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|_| bad())?;
    let uri = endpoint.uri();
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Config {
        Config::new("http://127.0.0.1:7000".into(), "join-token-0123456789".into())
    }

    fn refused(adjust: impl FnOnce(&mut Config)) -> String {
        let mut cfg = ok();
        adjust(&mut cfg);
        cfg.validate().expect_err("refused")
    }

    #[test]
    fn the_defaults_pass() {
        assert_eq!(ok().validate(), Ok(()));
        let mut cfg = ok();
        cfg.redis_url = Some("redis://:secret@127.0.0.1:6379/2".into());
        cfg.edge_id = Some("edge-eu-1".into());
        cfg.control_plane_url = "https://cp.example:443".into();
        cfg.trusted_proxies = vec!["10.0.0.0/8".into(), "2001:db8::/32".into(), "192.0.2.7".into()];
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn each_bad_option_is_named() {
        assert!(refused(|c| c.join_token.clear()).starts_with("--join-token"));
        assert!(refused(|c| c.join_token = "tok\nen-0123456789abcdef".into()).starts_with("--join-token"));
        assert!(refused(|c| c.join_token = "short".into()).starts_with("--join-token"));
        for url in ["", "127.0.0.1:7000", "ftp://cp", "http://", "not a url"] {
            assert!(refused(|c| c.control_plane_url = url.into()).starts_with("--control-plane-url"), "{url}");
        }
        let e = refused(|c| c.redis_url = Some("postgres://:hunter2@db".into()));
        assert!(e.starts_with("--redis-url") && !e.contains("hunter2"), "{e}");
        assert!(refused(|c| c.edge_id = Some("a/b".into())).starts_with("--edge-id"));
        assert!(refused(|c| c.call_body_limit = 0).starts_with("call_body_limit"));
        assert!(refused(|c| c.call_body_limit = MAX_CALL_BODY_LIMIT + 1).starts_with("call_body_limit"));
        assert!(refused(|c| c.flush_interval = Duration::ZERO).starts_with("flush_interval"));
        assert!(refused(|c| c.flush_interval = Duration::from_secs(61)).starts_with("flush_interval"));
        assert!(refused(|c| c.revocation_poll = Duration::ZERO).starts_with("revocation_poll"));
        assert!(refused(|c| c.header_read_timeout = Duration::ZERO).starts_with("--header-read-timeout-s"));
        assert!(refused(|c| c.header_read_timeout = Duration::from_secs(301)).starts_with("--header-read-timeout-s"));
        assert!(refused(|c| c.body_read_timeout = Duration::ZERO).starts_with("--body-read-timeout-s"));
        assert!(refused(|c| c.write_timeout = Duration::ZERO).starts_with("--write-timeout-s"));
        assert!(refused(|c| c.trusted_proxies = vec!["10.0.0.0/33".into()]).starts_with("--trusted-proxies"));
        let missing = tls::TlsFiles { cert: "/nonexistent/cert.pem".into(), key: "/nonexistent/key.pem".into() };
        assert!(refused(|c| c.tls = Some(missing)).starts_with("--edge-tls-cert"));
        assert!(refused(|c| c.max_connections = 0).starts_with("--max-connections"));
        assert!(refused(|c| c.max_connections = MAX_MAX_CONNECTIONS + 1).starts_with("--max-connections"));
    }
}
