//! Password hashing with argon2id at the OWASP floor (m = 19 MiB, t = 2, p = 1), run on
//! the blocking pool so a burst of logins never stalls the async runtime. Every hash and
//! verification passes one gate: as many run at once as there are cores, a few more wait,
//! and the rest are refused at once with a 503, so a burst cannot take memory or queue up.
use std::sync::{
    LazyLock,
    atomic::{AtomicUsize, Ordering},
};

use souq_proto::{Kind, WireError};
use tokio::sync::{Semaphore, SemaphorePermit};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher, PasswordVerifier},
};

use crate::error::{Error, Result};

/// Memory cost in KiB (19 MiB), OWASP's minimum for argon2id.
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
pub const ITERATIONS: u32 = 2;
/// Parallelism.
pub const PARALLELISM: u32 = 1;

/// Shortest and longest passwords accepted, in characters.
pub const MIN_LEN: usize = 8;
/// Longest password accepted; bounds the hashing work an attacker can ask for.
pub const MAX_LEN: usize = 128;

/// Hashes waiting for a core, per core, before the next one is refused.
const WAITING_PER_CORE: usize = 2;

/// Bounds argon2 work: `running` at once, `waiting` more queued, the rest refused.
#[derive(Debug)]
struct Gate {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Gives a waiter's place in the queue back, also when its request is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    fn new(running: usize, max_waiting: usize) -> Self {
        Gate { permits: Semaphore::new(running.max(1)), waiting: AtomicUsize::new(0), max_waiting }
    }

    /// A permit to run one hash; `Unavailable` at once when the queue is full.
    async fn enter(&self) -> Result<SemaphorePermit<'_>> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let _place = Waiting(&self.waiting);
        self.permits.acquire().await.map_err(|_| busy())
    }

    /// Runs `work` on the blocking pool once a permit is granted; the permit is held until
    /// `work` ends, even if the caller stops waiting for it.
    async fn run<T: Send + 'static>(&'static self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let permit = self.enter().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Error::Internal(format!("password task: {e}")))
    }
}

/// The answer when the gate's queue is full: try again in a second.
fn busy() -> Error {
    WireError { retry_after: Some(1), ..WireError::new(Kind::Unavailable, "too many logins at once; try again shortly") }.into()
}

/// The one gate all hashing and verification share, sized to the cores.
static GATE: LazyLock<Gate> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Gate::new(cores, cores * WAITING_PER_CORE)
});

fn hasher() -> Argon2<'static> {
    // The parameters are constants known to be valid.
    #[allow(clippy::unwrap_used)]
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password, verified against when the email is unknown so that an
/// unknown address costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut pw = [0u8; 16];
    let _ = getrandom::fill(&mut pw);
    hash_now(&hex::encode(pw)).unwrap_or_default()
});

fn hash_now(password: &str) -> Result<String> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2 hash: {e}")))
}

/// Hashes a password into a PHC string. `Unavailable` (with a retry-after) when too many
/// hashes are already running and waiting.
pub async fn hash(password: String) -> Result<String> {
    GATE.run(move || hash_now(&password)).await?
}

/// Checks a password against a stored PHC string; with `None`, checks against a dummy
/// hash and returns false, taking the same time and passing the same gate.
/// `Unavailable` (with a retry-after) when too many hashes are already running and
/// waiting; then nothing was checked.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool> {
    GATE.run(move || {
        let (hash, real) = match &stored {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH.as_str(), false),
        };
        let ok = hasher().verify_password(password.as_bytes(), hash).is_ok();
        ok && real
    })
    .await
}

/// Warms the dummy hash so the first unknown-email login is not slower than the rest.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_with_owasp_parameters_and_verifies() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse".into(), Some(h.clone())).await.unwrap());
        assert!(!verify("wrong horse".into(), Some(h)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn past_the_queue_the_gate_refuses_at_once() {
        static SMALL: LazyLock<Gate> = LazyLock::new(|| Gate::new(1, 1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let running = tokio::spawn(SMALL.run(move || hold.recv().is_ok()));
        while SMALL.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let waiter = tokio::spawn(SMALL.run(|| 7));
        while SMALL.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // Running one, one waiting: the next is refused without waiting.
        let refused = SMALL.run(|| 0).await;
        match refused {
            Err(Error::Wire(w)) => {
                assert_eq!(w.kind, Kind::Unavailable);
                assert_eq!(w.retry_after, Some(1));
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        release.send(()).unwrap();
        assert!(running.await.unwrap().unwrap());
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        assert_eq!(SMALL.waiting.load(Ordering::Acquire), 0, "the queue is empty again");
        assert_eq!(SMALL.run(|| 1).await.unwrap(), 1);
    }
}
