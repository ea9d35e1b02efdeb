//! Shutdown on SIGTERM or SIGINT: the first starts a drain, a second exits at once.
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Cancels `shutdown` on the first signal and exits the process on the second.
pub fn watch(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            warn!("cannot install signal handlers");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        warn!("shutting down; send the signal again to exit at once");
        shutdown.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        // The operator asked twice: do not wait for in-flight work.
        std::process::exit(130);
    });
}
