//! Process-wide logging: JSON lines on stderr, filtered by `SOUQ_LOG` (default `info`).
use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber.
pub fn init() {
    let filter = EnvFilter::try_from_env("SOUQ_LOG").unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let json = std::env::var("SOUQ_LOG_FORMAT").map_or(true, |f| f != "text");
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json { builder.json().flatten_event(true).init() } else { builder.init() }
}
