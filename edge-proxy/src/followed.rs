//! A table the control plane streams and the edge follows (the route table, the access
//! table): [`Followed`] holds the latest one, swapped whole on each new table so a reader
//! never waits on an update, and [`follow`] is the one reconnecting loop that feeds it.
use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch as signal;

use crate::metrics::Receipt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// First wait after a failed or ended subscription.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Largest table accepted: the whole table is one message, and it grows with the APIs.
pub const MAX_TABLE_BYTES: usize = 64 * 1024 * 1024;

/// A table as readers see it, indexed from what the control plane sends.
pub trait Table: Default + Send + Sync + 'static {
    /// The table as the control plane sends it.
    type Wire: Send + 'static;

    /// Whether `wire` is the control plane's empty placeholder (generation 0, nothing in
    /// it), sent before it has built a real table; it never replaces a real one.
    fn is_placeholder(wire: &Self::Wire) -> bool;

    /// Indexes `wire`; `previous` is the table it replaces (to carry state across).
    fn from_wire(wire: Self::Wire, previous: &Self) -> Self;
}

/// The latest table, shared by its follower (one writer) and every request (readers).
#[derive(Debug)]
pub struct Followed<T> {
    current: RwLock<Arc<T>>,
    /// Tables received since start; 0 until the first.
    received: AtomicU64,
    /// Told of every installed table, for [`Followed::wait_for`].
    installed: signal::Sender<u64>,
    /// When a table was last installed, for the table's age metric.
    receipt: Arc<Receipt>,
}

impl<T: Table> Default for Followed<T> {
    fn default() -> Self {
        Self::with_receipt(Arc::default())
    }
}

impl<T: Table> Followed<T> {
    /// An empty table that notes each one installed in `receipt`.
    pub fn with_receipt(receipt: Arc<Receipt>) -> Self {
        Followed {
            current: RwLock::default(),
            received: AtomicU64::new(0),
            installed: signal::Sender::new(0),
            receipt,
        }
    }

    /// A snapshot of the current table: one `Arc` clone under a read lock.
    pub fn snapshot(&self) -> Arc<T> {
        match self.current.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a table has been received since start.
    pub fn has_table(&self) -> bool {
        self.received.load(Ordering::Relaxed) > 0
    }

    /// Replaces the table with `wire`, unless `wire` is the empty placeholder and a real
    /// table is already held: the edge never trades what it knows for nothing. Returns
    /// the new table when it was installed.
    pub fn install(&self, wire: T::Wire) -> Option<Arc<T>> {
        if T::is_placeholder(&wire) && self.has_table() {
            return None;
        }
        let table = Arc::new(T::from_wire(wire, &self.snapshot()));
        match self.current.write() {
            Ok(mut t) => *t = table.clone(),
            Err(poisoned) => *poisoned.into_inner() = table.clone(),
        }
        self.receipt.mark();
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        self.installed.send_replace(n);
        Some(table)
    }

    /// Waits until the table satisfies `holds`, at most `patience`; whether it does.
    ///
    /// A management call that changes access (a new key, a subscription, a revocation)
    /// waits on this before answering, so the caller's next call through this edge already
    /// sees the change: the control plane pushes the new table at once, and this is the
    /// moment it lands.
    pub async fn wait_for(&self, holds: impl Fn(&T) -> bool, patience: Duration) -> bool {
        let mut installed = self.installed.subscribe();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            installed.borrow_and_update();
            if holds(&self.snapshot()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, installed.changed()).await.is_err() {
                return false;
            }
        }
    }
}

/// The next wait after `wait`: doubled, at most [`BACKOFF_MAX`].
pub(crate) fn next_backoff(wait: Duration) -> Duration {
    (wait * 2).min(BACKOFF_MAX)
}

/// Follows one of the control plane's table streams into `followed` until `shutdown`:
/// `open` subscribes, and `installed` sees each table installed. A broken or ended
/// stream is opened again with backoff (200 ms doubling to 5 s); meanwhile the last
/// table keeps serving (it is never cleared: a change arrives as a new table).
pub async fn follow<T, Open, Fut>(
    followed: &Followed<T>,
    what: &'static str,
    mut open: Open,
    shutdown: CancellationToken,
    mut installed: impl FnMut(&T),
) where
    T: Table,
    Open: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Streaming<T::Wire>, tonic::Status>>,
{
    let mut wait = BACKOFF_MIN;
    // Log the first failure of a run of failures at warn, the rest at debug.
    let mut failing = false;
    loop {
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            r = open() => r,
        };
        match opened {
            Ok(mut stream) => loop {
                let msg = tokio::select! {
                    () = shutdown.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(wire)) => {
                        if let Some(table) = followed.install(wire) {
                            installed(&table);
                        }
                        wait = BACKOFF_MIN;
                        if failing {
                            info!(what, "table stream restored");
                        }
                        failing = false;
                    }
                    Ok(None) => {
                        info!(what, "table stream ended; resubscribing");
                        break;
                    }
                    Err(status) => {
                        warn!(what, code = ?status.code(), "table stream broke; resubscribing, serving the last table");
                        break;
                    }
                }
            },
            Err(status) => {
                if failing {
                    debug!(what, code = ?status.code(), "control plane still unreachable");
                } else {
                    warn!(what, code = ?status.code(), "could not subscribe; serving the last table and retrying");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = next_backoff(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of numbers; the placeholder is an empty list.
    #[derive(Debug, Default)]
    struct Numbers {
        values: Vec<u32>,
        /// How many tables came before this one.
        previous: usize,
    }

    impl Table for Numbers {
        type Wire = Vec<u32>;

        fn is_placeholder(wire: &Vec<u32>) -> bool {
            wire.is_empty()
        }

        fn from_wire(wire: Vec<u32>, previous: &Self) -> Self {
            let previous = if previous.values.is_empty() { previous.previous } else { previous.previous + 1 };
            Numbers { values: wire, previous }
        }
    }

    #[test]
    fn a_placeholder_only_fills_an_empty_start() {
        let f = Followed::<Numbers>::default();
        assert!(!f.has_table());
        assert!(f.install(vec![]).is_some(), "the first placeholder is installed");
        assert!(f.has_table());
        assert!(f.install(vec![1, 2]).is_some());
        assert!(f.install(vec![]).is_none(), "never replaces a real table");
        assert_eq!(f.snapshot().values, [1, 2]);
        assert_eq!(f.install(vec![3]).map(|t| t.previous), Some(1), "the previous table is handed over");
    }

    #[tokio::test]
    async fn waiting_for_a_change_ends_when_it_lands_or_at_the_deadline() {
        let f = Arc::new(Followed::<Numbers>::default());
        let has_7 = |t: &Numbers| t.values.contains(&7);
        assert!(!f.wait_for(has_7, Duration::from_millis(50)).await);
        let later = f.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.install(vec![1]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.install(vec![7]);
        });
        let started = std::time::Instant::now();
        assert!(f.wait_for(has_7, Duration::from_secs(5)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let mut w = BACKOFF_MIN;
        let mut seen = vec![w];
        for _ in 0..8 {
            w = next_backoff(w);
            seen.push(w);
        }
        assert_eq!(seen[1], Duration::from_millis(400));
        assert_eq!(seen[4], Duration::from_millis(3200));
        assert_eq!(seen[5], BACKOFF_MAX);
        assert_eq!(*seen.last().unwrap_or(&Duration::ZERO), BACKOFF_MAX);
    }
}
