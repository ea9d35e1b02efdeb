//! Password hashing with argon2id at the OWASP floor (m = 19 MiB, t = 2, p = 1), run on
//! a few threads of its own so a burst of logins never stalls the async runtime. Every
//! hash and verification passes one gate: as many run at once as there are cores, a few
//! more wait, and the rest are refused at once with a 503, so a burst cannot take memory
//! or queue up. The hashing threads are as many as the gate lets run and live as long as
//! the process, and each keeps its own 19 MiB of argon2 memory for every hash it runs.
//! Letting argon2 allocate and free 19 MiB per hash raised glibc's mmap threshold to
//! 19 MiB, after which the rest of the process's allocations fragmented the heap: a burst
//! of 2,000 logins took the process to 336 MiB; with the memory kept, 100 MiB.
use std::{cell::RefCell, sync::{
    Arc, LazyLock, Mutex,
    atomic::{AtomicUsize, Ordering},
    mpsc,
}};

use souq_proto::{Kind, WireError};
use tokio::sync::{Semaphore, SemaphorePermit};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::{
        PasswordHasher, PasswordVerifier,
        phc::{Output, ParamsString, PasswordHash, Salt},
    },
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
    workers: Workers,
}

/// One hash to run on a worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// The threads that run every hash, fed through one queue.
#[derive(Debug)]
struct Workers {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Workers {
    /// Starts `count` threads that run jobs until the process ends.
    fn start(count: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..count.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                loop {
                    // The lock is held only to take the next job, not to run it.
                    let next = rx.lock().map_err(drop).and_then(|rx| rx.recv().map_err(drop));
                    match next {
                        Ok(job) => job(),
                        Err(()) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-hashing thread");
            }
        }
        Workers { jobs: Mutex::new(tx) }
    }

    /// Queues `job`; false when no worker can take it.
    fn send(&self, job: Job) -> bool {
        self.jobs.lock().is_ok_and(|tx| tx.send(job).is_ok())
    }
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
        let running = running.max(1);
        Gate {
            permits: Semaphore::new(running),
            waiting: AtomicUsize::new(0),
            max_waiting,
            workers: Workers::start(running),
        }
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

    /// Runs `work` on a hashing thread once a permit is granted; the permit is held until
    /// `work` ends, even if the caller stops waiting for it.
    async fn run<T: Send + 'static>(&'static self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let permit = self.enter().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _permit = permit;
            let _ = tx.send(work());
        });
        if !self.workers.send(job) {
            return Err(Error::Internal("no password-hashing thread is running".into()));
        }
        rx.await.map_err(|_| Error::Internal("a password-hashing thread stopped".into()))
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

fn params() -> Params {
    // The parameters are constants known to be valid.
    #[allow(clippy::unwrap_used)]
    Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None).unwrap()
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// A hash of a random password, verified against when the email is unknown so that an
/// unknown address costs the same time as a wrong password. Made once, with memory of
/// its own rather than a hashing thread's.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut pw = [0u8; 16];
    let _ = getrandom::fill(&mut pw);
    hasher().hash_password(hex::encode(pw).as_bytes()).map(|h| h.to_string()).unwrap_or_default()
});

thread_local! {
    /// This hashing thread's argon2 memory: taken by its first hash, reused by every
    /// later one, so that hashing never hands 19 MiB back to the allocator.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 with `params` over `password` and `salt` into `out`, in this thread's
/// memory.
fn argon2_into(params: &Params, password: &[u8], salt: &[u8], out: &mut [u8]) -> argon2::Result<()> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < params.block_count() {
            memory.resize(params.block_count(), Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, memory.as_mut_slice())
    })
}

fn hash_now(password: &str) -> Result<String> {
    let internal = |e: &dyn std::fmt::Display| Error::Internal(format!("argon2 hash: {e}"));
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| internal(&e))?;
    let params = params();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&params, password.as_bytes(), &salt, &mut out).map_err(|e| internal(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| internal(&e))?),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`. Hashes made with Souq's own
/// parameters are checked in this thread's memory; any other goes through the library.
fn verify_now(password: &[u8], stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else { return false };
    let ours = params();
    let own = phc.algorithm == Algorithm::Argon2id.ident() && phc.version == Some(Version::V0x13.into());
    match (Params::try_from(&phc), &phc.salt, &phc.hash) {
        (Ok(p), Some(salt), Some(expected))
            if own && (p.m_cost(), p.t_cost(), p.p_cost()) == (ours.m_cost(), ours.t_cost(), ours.p_cost()) =>
        {
            let mut out = vec![0u8; expected.len()];
            // `Output`'s equality is constant-time.
            argon2_into(&p, password, salt.as_ref(), &mut out).is_ok()
                && Output::new(&out).is_ok_and(|computed| computed == *expected)
        }
        _ => hasher().verify_password(password, stored).is_ok(),
    }
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
        verify_now(password.as_bytes(), hash) && real
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
    async fn hashes_agree_with_the_argon2_library_both_ways() {
        let ours = hash("correct horse".into()).await.unwrap();
        assert!(hasher().verify_password(b"correct horse", ours.as_str()).is_ok());
        assert!(hasher().verify_password(b"wrong horse", ours.as_str()).is_err());
        let library = hasher().hash_password(b"correct horse").unwrap().to_string();
        assert!(verify("correct horse".into(), Some(library.clone())).await.unwrap());
        assert!(!verify("wrong horse".into(), Some(library)).await.unwrap());
        // Other parameters (an older hash) still verify, through the library.
        let weaker = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8 * 1024, 1, 1, None).unwrap());
        let old = weaker.hash_password(b"correct horse").unwrap().to_string();
        assert!(verify("correct horse".into(), Some(old)).await.unwrap());
        assert!(!verify("x".into(), Some("not a phc string".into())).await.unwrap());
    }

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
