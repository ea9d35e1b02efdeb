//! Tests of the instance lifecycle through `Instances`, with a fake launcher whose
//! sandboxes are fake shims on Unix socket pairs: no Docker.
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use souq_proto::{
    Runtime,
    agent::{InstanceState, ResultKind},
};
use tokio::{io::AsyncWriteExt, net::UnixStream};

use super::*;
use crate::{
    instances::{
        lifecycle::{BoxFuture, Ended, Launched, LaunchedSandbox},
        log_buffer::{LogBuffer, STDOUT},
        serve_client::{Broken, tests::FakeShim},
    },
    sandbox::frame::FrameReader,
};

/// What the next fake sandbox does.
#[derive(Debug, Clone, Copy)]
enum Shim {
    /// Loads, then echoes every event.
    Echo,
    /// Refuses the code.
    Reject,
    /// Loads, then never answers.
    Hang,
    /// Loads, takes one call, then dies.
    CrashOnCall,
    /// Never starts: the Engine refused.
    NoStart,
}

#[derive(Default)]
struct FakeLauncher {
    plan: Mutex<VecDeque<Shim>>,
    launches: AtomicUsize,
    removed: Arc<AtomicUsize>,
}

impl FakeLauncher {
    fn with(plan: &[Shim]) -> Arc<Self> {
        Arc::new(FakeLauncher { plan: Mutex::new(plan.iter().copied().collect()), ..Default::default() })
    }
}

impl Launcher for FakeLauncher {
    fn launch<'a>(&'a self, _spec: &'a InstanceSpec, logs: &'a Arc<LogBuffer>) -> BoxFuture<'a, Result<Launched, Ended>> {
        Box::pin(async move {
            self.launches.fetch_add(1, SeqCst);
            let shim = self.plan.lock().unwrap().pop_front().unwrap_or(Shim::Echo);
            if let Shim::NoStart = shim {
                return Err(Ended::new("could not start the sandbox: no such image"));
            }
            let (agent, theirs) = UnixStream::pair().unwrap();
            let (r, w) = theirs.into_split();
            let mut fake = FakeShim { reader: FrameReader::new(r), writer: w };
            logs.push(STDOUT, "shim up");
            tokio::spawn(async move {
                fake.read_load().await;
                match shim {
                    Shim::Reject => {
                        let msg = b"SyntaxError: invalid syntax";
                        let mut out = format!("{{\"ready\":false,\"error_len\":{}}}\n", msg.len()).into_bytes();
                        out.extend_from_slice(msg);
                        fake.writer.write_all(&out).await.unwrap();
                    }
                    Shim::Echo => {
                        fake.ready().await;
                        fake.echo().await;
                    }
                    Shim::Hang => {
                        fake.ready().await;
                        while fake.request().await.is_some() {}
                    }
                    Shim::CrashOnCall => {
                        fake.ready().await;
                        let _ = fake.request().await;
                    }
                    Shim::NoStart => {}
                }
            });
            Ok(Launched { stream: agent, sandbox: Box::new(FakeSandbox { removed: self.removed.clone() }) })
        })
    }
}

struct FakeSandbox {
    removed: Arc<AtomicUsize>,
}

impl LaunchedSandbox for FakeSandbox {
    fn ended<'a>(&'a mut self, broken: &'a Broken) -> BoxFuture<'a, Ended> {
        Box::pin(async move { Ended { what: format!("fake: {broken}"), last_stderr: Some("boom".into()) } })
    }

    fn remove(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.removed.fetch_add(1, SeqCst);
        Box::pin(async {})
    }
}

fn spec(id: &str, timeout: Duration) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.into(),
        api_id: "api-1".into(),
        version: 1,
        runtime: Runtime::Python,
        image: "img".into(),
        code: "def handler(event): return event".into(),
        timeout,
    }
}

fn instances(launcher: &Arc<FakeLauncher>) -> Instances {
    Instances::new(launcher.clone(), 1024 * 1024, 8)
}

fn kind<T: std::fmt::Debug>(r: Result<T>) -> Kind {
    match r {
        Err(Error::Wire(w)) => w.kind,
        other => panic!("expected a wire error, got {other:?}"),
    }
}

fn state(s: &InstanceStatus) -> InstanceState {
    InstanceState::try_from(s.state).unwrap()
}

/// Polls (in paused time) until the instance's status satisfies `done`.
async fn eventually(all: &Instances, id: &str, done: impl Fn(&InstanceStatus) -> bool) -> InstanceStatus {
    for _ in 0..1200 {
        if let Some(s) = all.statuses().into_iter().find(|s| s.instance_id == id)
            && done(&s)
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("instance {id} never got there: {:?}", all.statuses());
}

fn notes(all: &Instances, id: &str) -> Vec<String> {
    let log = all.get(id).unwrap().logs().tail(usize::MAX);
    log.iter().filter(|l| l.stream == "souq").map(|l| l.text.clone()).collect()
}

#[tokio::test]
async fn deploy_invoke_and_stop() {
    let launcher = FakeLauncher::with(&[Shim::Echo]);
    let all = instances(&launcher);
    let status = all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap();
    assert_eq!((state(&status), status.restarts, status.api_id.as_str()), (InstanceState::Running, 0, "api-1"));
    let r = all.invoke("i-1", br#"{"path":"/"}"#.to_vec(), None).await.unwrap();
    assert_eq!((r.kind(), r.body.as_slice()), (ResultKind::Json, &br#"{"path":"/"}"#[..]));
    assert_eq!(all.statuses().len(), 1);

    all.stop("i-1").await.unwrap();
    assert_eq!(launcher.removed.load(SeqCst), 1, "the sandbox is removed");
    assert!(all.statuses().is_empty(), "and the instance forgotten");
    assert_eq!(kind(all.invoke("i-1", b"{}".to_vec(), None).await), Kind::NotFound);
    all.stop("i-1").await.unwrap();
}

#[tokio::test]
async fn deploy_is_idempotent_by_instance_id() {
    let launcher = FakeLauncher::with(&[Shim::Echo]);
    let all = instances(&launcher);
    let (a, b) = tokio::join!(all.deploy(spec("i-1", Duration::from_secs(30))), all.deploy(spec("i-1", Duration::from_secs(30))));
    assert_eq!(a.unwrap(), b.unwrap());
    let again = all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap();
    assert_eq!(state(&again), InstanceState::Running);
    assert_eq!(launcher.launches.load(SeqCst), 1);
    let other_version = InstanceSpec { version: 2, ..spec("i-1", Duration::from_secs(30)) };
    assert_eq!(kind(all.deploy(other_version).await), Kind::Conflict);
}

#[tokio::test]
async fn a_load_failure_is_failed_and_not_retried() {
    let launcher = FakeLauncher::with(&[Shim::Reject]);
    let all = instances(&launcher);
    let status = all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap();
    assert_eq!(state(&status), InstanceState::Failed);
    assert_eq!(status.error, "SyntaxError: invalid syntax");
    assert_eq!(kind(all.invoke("i-1", b"{}".to_vec(), None).await), Kind::Unavailable);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(launcher.launches.load(SeqCst), 1, "not retried");
    assert_eq!(launcher.removed.load(SeqCst), 1, "its sandbox is gone");
    assert!(notes(&all, "i-1").contains(&"load failed: SyntaxError: invalid syntax".to_owned()));
    assert_eq!(state(&all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap()), InstanceState::Failed);
}

#[tokio::test(start_paused = true)]
async fn a_crash_is_reported_then_restarted_with_backoff() {
    let launcher = FakeLauncher::with(&[Shim::CrashOnCall, Shim::CrashOnCall, Shim::Echo]);
    let all = instances(&launcher);
    let t = Duration::from_secs(30);
    assert_eq!(state(&all.deploy(spec("i-1", t)).await.unwrap()), InstanceState::Running);
    assert_eq!(kind(all.invoke("i-1", b"{}".to_vec(), None).await), Kind::Unavailable);
    let crashed = eventually(&all, "i-1", |s| s.state == InstanceState::Crashed as i32).await;
    assert_eq!(crashed.error, "fake: the shim closed the channel; last stderr line: boom");

    let started = tokio::time::Instant::now();
    eventually(&all, "i-1", |s| s.restarts == 1 && s.state == InstanceState::Running as i32).await;
    assert_eq!(kind(all.invoke("i-1", b"{}".to_vec(), None).await), Kind::Unavailable);
    let s = eventually(&all, "i-1", |s| s.restarts == 2 && s.state == InstanceState::Running as i32).await;
    assert!(started.elapsed() >= Duration::from_secs(3), "waited 1 s, then 2 s");
    assert!(s.error.contains("closed the channel"), "the last crash's reason is kept: {s:?}");
    let r = all.invoke("i-1", b"[]".to_vec(), None).await.unwrap();
    assert_eq!(r.body, b"[]");
    assert_eq!(launcher.removed.load(SeqCst), 2);
    let notes = notes(&all, "i-1");
    assert_eq!(notes.iter().filter(|n| *n == "started").count(), 3);
    assert!(notes.contains(&"restarting in 1 s".to_owned()) && notes.contains(&"restarting in 2 s".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_timeout_restarts_the_instance() {
    let launcher = FakeLauncher::with(&[Shim::Hang, Shim::Echo]);
    let all = Arc::new(instances(&launcher));
    all.deploy(spec("i-1", Duration::from_secs(5))).await.unwrap();
    // The first call asks for longer than the instance allows: it gets the instance's 5 s.
    let started = tokio::time::Instant::now();
    let stuck = tokio::spawn({
        let all = all.clone();
        async move { all.invoke("i-1", b"1".to_vec(), Some(Duration::from_secs(60))).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(kind(all.invoke("i-1", b"2".to_vec(), None).await), Kind::Unavailable, "the call behind it is failed over");
    assert_eq!(kind(stuck.await.unwrap()), Kind::Timeout);
    assert_eq!(started.elapsed().as_secs(), 5);
    let s = eventually(&all, "i-1", |s| s.restarts == 1 && s.state == InstanceState::Running as i32).await;
    assert!(s.error.contains("timeout of 5000 ms"), "{s:?}");
    assert_eq!(all.invoke("i-1", b"3".to_vec(), None).await.unwrap().body, b"3");
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_does_not_start_is_crashed_and_retried() {
    let launcher = FakeLauncher::with(&[Shim::NoStart]);
    let all = instances(&launcher);
    let status = all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap();
    assert_eq!(state(&status), InstanceState::Crashed);
    assert!(status.error.contains("no such image"));
    eventually(&all, "i-1", |s| s.state == InstanceState::Running as i32).await;
}

#[tokio::test]
async fn bounds_and_shutdown() {
    let launcher = FakeLauncher::with(&[]);
    let all = Instances::new(launcher.clone(), 1024, 2);
    all.deploy(spec("a", Duration::from_secs(1))).await.unwrap();
    all.deploy(spec("b", Duration::from_secs(1))).await.unwrap();
    assert_eq!(kind(all.deploy(spec("c", Duration::from_secs(1))).await), Kind::NoCapacity);
    all.stop_all().await;
    assert!(all.statuses().is_empty());
    assert_eq!(launcher.removed.load(SeqCst), 2);
    assert_eq!(kind(all.deploy(spec("a", Duration::from_secs(1))).await), Kind::Unavailable);
}

/// Waits, boundedly, until `cond` holds.
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never happened");
}

/// Whether a failed call was refused as having run nothing.
fn ran_nothing<T: std::fmt::Debug>(r: Result<T, InvokeError>) -> bool {
    r.expect_err("a failed call").ran_nothing
}

#[tokio::test]
async fn only_refusals_that_ran_nothing_say_so() {
    let launcher = FakeLauncher::with(&[Shim::Reject, Shim::CrashOnCall]);
    let all = instances(&launcher);
    assert!(ran_nothing(all.call("nope", b"{}".to_vec(), None).await), "no such instance");
    all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap();
    assert!(ran_nothing(all.call("i-1", b"{}".to_vec(), None).await), "not serving (failed to load)");
    all.deploy(spec("i-2", Duration::from_secs(30))).await.unwrap();
    // The shim took the call, then died: it may have run.
    assert!(!ran_nothing(all.call("i-2", b"{}".to_vec(), None).await), "lost during the call");
}

#[tokio::test]
async fn the_drain_lets_calls_in_flight_finish_and_refuses_new_ones() {
    let launcher = FakeLauncher::with(&[Shim::Hang, Shim::Echo]);
    let all = Arc::new(instances(&launcher));
    all.deploy(spec("slow", Duration::from_millis(300))).await.unwrap();
    all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap();
    let in_flight = tokio::spawn({
        let all = all.clone();
        async move { all.call("slow", b"1".to_vec(), None).await }
    });
    until(|| all.gate.in_flight() == 1).await;
    let drained = tokio::spawn({
        let all = all.clone();
        async move { all.drain(Duration::from_secs(30)).await }
    });
    until(|| all.gate.is_draining()).await;
    let refused = all.call("i-1", b"{}".to_vec(), None).await;
    assert!(ran_nothing(refused), "a new call is refused as having run nothing");
    // The call in flight got its (timeout) answer rather than being cut.
    assert!(!ran_nothing(in_flight.await.unwrap()));
    assert_eq!(drained.await.unwrap(), 0, "nothing was still running");
}

#[tokio::test]
async fn instances_are_counted_by_state() {
    let launcher = FakeLauncher::with(&[Shim::Echo, Shim::Reject]);
    let m = Arc::new(crate::metrics::Metrics::default());
    let all = Instances::with_metrics(launcher.clone(), 1024 * 1024, 8, m.clone());
    let counts = || {
        ["starting", "running", "crashed", "failed"]
            .map(|state| m.instances.get_or_create(&crate::metrics::StateLabels { state }).get())
    };
    assert_eq!(counts(), [0, 0, 0, 0]);
    all.deploy(spec("i-1", Duration::from_secs(30))).await.unwrap();
    all.deploy(spec("i-2", Duration::from_secs(30))).await.unwrap();
    assert_eq!(counts(), [0, 1, 0, 1], "one running, one failed to load");
    all.stop("i-1").await.unwrap();
    assert_eq!(counts(), [0, 0, 0, 1], "a stopped instance is no longer counted");
    all.stop_all().await;
    assert_eq!(counts(), [0, 0, 0, 0]);
}
