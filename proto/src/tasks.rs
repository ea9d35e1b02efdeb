//! The one shutdown pattern of every role: background tasks live in a [`Tasks`] set,
//! watch one [`CancellationToken`], and get a bounded grace period to finish once it is
//! cancelled; whatever is still running then is aborted. Dropping the set aborts every
//! task, so a role whose `run` is dropped (a crash, in tests) leaves nothing behind.
use std::{future::Future, time::Duration};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a role's background tasks get to finish after shutdown starts, unless the
/// role says otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// A role's background tasks and the token that stops them.
pub struct Tasks {
    set: JoinSet<&'static str>,
    shutdown: CancellationToken,
}

impl Tasks {
    /// An empty set whose tasks stop when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Tasks { set: JoinSet::new(), shutdown }
    }

    /// The token the tasks watch; cancelled by the role's caller or by [`Tasks::shutdown`].
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts `task`, named for the logs. It must end soon after the token is cancelled.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(async move {
            task.await;
            name
        });
    }

    /// How many tasks are still running.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no task is running.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Cancels the token, then waits up to `grace` for every task to end, and aborts the
    /// rest. A task that panicked is logged; the shutdown goes on.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.cancel();
        let all_done = async {
            while let Some(done) = self.set.join_next().await {
                match done {
                    Ok(name) => tracing::debug!(task = name, "task ended"),
                    Err(e) if e.is_panic() => tracing::error!(error = %e, "a background task panicked"),
                    Err(_) => {}
                }
            }
        };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tracing::warn!(
                left = self.set.len(),
                grace_ms = grace.as_millis() as u64,
                "tasks overran the grace period; aborting them"
            );
            self.set.abort_all();
            while self.set.join_next().await.is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tasks_that_stop_end_within_grace_and_the_rest_are_aborted() {
        let token = CancellationToken::new();
        let mut tasks = Tasks::new(token.clone());
        let (polite, stubborn) = (std::sync::Arc::new(()), std::sync::Arc::new(()));
        let (p, s) = (polite.clone(), stubborn.clone());
        let t = tasks.token();
        tasks.spawn("polite", async move {
            t.cancelled().await;
            drop(p);
        });
        tasks.spawn("stubborn", async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(s);
        });
        assert_eq!(tasks.len(), 2);
        tasks.shutdown(Duration::from_secs(1)).await;
        assert!(token.is_cancelled());
        // Both futures are gone: the polite one ended, the stubborn one was aborted.
        assert_eq!((std::sync::Arc::strong_count(&polite), std::sync::Arc::strong_count(&stubborn)), (1, 1));
    }
}
