//! A warm sandbox: a container whose shim runs in `session` mode, waiting for code. It
//! belongs to at most one user, and runs each execution in a fresh process. Requests and
//! answers are length-framed over the sandbox's channel (see `channel`): the request
//! `{"v":1,"id":I,"code_len":N,"stdin_len":M,"timeout_ms":T,"output_limit":L}` (plus
//! `"traceparent"` when the request is traced, which the shim hands to the run as
//! `TRACEPARENT`), then code and stdin; the answer carries the run's outcome and the
//! shim's own `start_ns`/`end_ns`, which become the `shim.execute` span.
//!
//! Lifecycle: `start` (create, start, the shim connects) → idle in a pool → assigned to
//! one user → `run` … `run` → `destroy` (after an abnormal run, too many uses, or
//! idleness). The container is removed whatever happens (see `container`).
use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use bollard::Docker;
use opentelemetry::KeyValue;
use serde::Deserialize;
use souq_proto::{Runtime, agent::ExecuteResult};
use tokio::{
    io::AsyncWriteExt,
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
    time::Instant,
};
use tracing::warn;

use super::{
    container::{Sandbox, SandboxSpec},
    frame::{FrameError, FrameReader, ShimTimes},
    profile::{Limits, ShimMode},
};
use crate::error::{Error, Result};

/// Time on top of a run's timeout for the shim to answer before the sandbox is given up.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// How long a started sandbox's shim may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The shim's answer header.
#[derive(Debug, Deserialize)]
struct Answer {
    id: u64,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    truncated: bool,
    oom_killed: bool,
    duration_ms: u64,
    stdout_len: usize,
    stderr_len: usize,
    clean: bool,
    #[serde(default)]
    start_ns: u64,
    #[serde(default)]
    end_ns: u64,
}

/// The request header: one line of JSON. The `traceparent` goes along when it is short
/// enough (the shim checks its shape).
fn request_header(
    id: u64,
    code_len: usize,
    stdin_len: usize,
    timeout: Duration,
    output_limit: usize,
    traceparent: Option<&str>,
) -> String {
    let mut header = format!(
        "{{\"v\":1,\"id\":{id},\"code_len\":{code_len},\"stdin_len\":{stdin_len},\"timeout_ms\":{},\"output_limit\":{output_limit}",
        timeout.as_millis()
    );
    if let Some(tp) = traceparent.filter(|t| t.len() <= souq_proto::trace::MAX_TRACEPARENT)
        && let Ok(quoted) = serde_json::to_string(tp)
    {
        header.push_str(",\"traceparent\":");
        header.push_str(&quoted);
    }
    header.push_str("}\n");
    header
}

/// One run's outcome, and whether the sandbox may serve again.
#[derive(Debug)]
pub struct Outcome {
    /// What the caller gets.
    pub result: ExecuteResult,
    /// False when the sandbox must be destroyed.
    pub reusable: bool,
}

/// A started sandbox with its shim waiting for code.
pub struct Session {
    /// The runtime it runs.
    pub runtime: Runtime,
    /// Runs served so far.
    pub uses: u32,
    /// When it last finished a run (or was started).
    pub last_used: Instant,
    sandbox: Sandbox,
    input: OwnedWriteHalf,
    output: FrameReader<OwnedReadHalf>,
    next_id: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("runtime", &self.runtime).field("uses", &self.uses).finish_non_exhaustive()
    }
}

impl Session {
    /// Creates and starts a sandbox for `runtime`, and waits for its shim to connect to
    /// the socket in a new directory under `channels`.
    pub async fn start(
        docker: &Docker,
        node: &str,
        image: &str,
        runtime: Runtime,
        limits: &Limits,
        channels: &Path,
    ) -> Result<Session> {
        let spec = SandboxSpec { mode: ShimMode::Session, node, instance: None, image, runtime, limits };
        let mut sandbox = Sandbox::start(docker, &spec, channels).await?;
        let (output, input) = sandbox.connect(CONNECT_TIMEOUT).await?.into_split();
        let output = FrameReader::new(output);
        Ok(Session { runtime, uses: 0, last_used: Instant::now(), sandbox, input, output, next_id: 1 })
    }

    /// Removes the container and its channel directory.
    pub async fn destroy(self) {
        self.sandbox.destroy().await;
    }

    /// Runs one snippet in a fresh process of this sandbox, in the current trace: the run
    /// gets its `traceparent`, and the shim's time becomes a span.
    pub async fn run(&mut self, code: &str, stdin: &[u8], timeout: Duration, output_limit: usize) -> Outcome {
        let traceparent = souq_proto::trace::current_traceparent();
        let sent = SystemTime::now();
        let (outcome, times) = self.run_timed(code, stdin, timeout, output_limit, traceparent.as_deref()).await;
        let mut attributes = vec![KeyValue::new("souq.runtime", self.runtime.as_str())];
        if let Some(code) = outcome.result.exit_code {
            attributes.push(KeyValue::new("souq.exit_code", i64::from(code)));
        }
        if outcome.result.timed_out {
            attributes.push(KeyValue::new("souq.timed_out", true));
        }
        times.record("shim.execute", sent, SystemTime::now(), attributes);
        outcome
    }

    /// [`Session::run`] with the `traceparent` given, returning the shim's times too
    /// (none when the sandbox broke).
    async fn run_timed(
        &mut self,
        code: &str,
        stdin: &[u8],
        timeout: Duration,
        output_limit: usize,
        traceparent: Option<&str>,
    ) -> (Outcome, ShimTimes) {
        let started = Instant::now();
        let id = self.next_id;
        self.next_id += 1;
        self.uses += 1;
        let header = request_header(id, code.len(), stdin.len(), timeout, output_limit, traceparent);
        let exchange = async {
            let mut frame = Vec::with_capacity(header.len() + code.len() + stdin.len());
            frame.extend_from_slice(header.as_bytes());
            frame.extend_from_slice(code.as_bytes());
            frame.extend_from_slice(stdin);
            self.input.write_all(&frame).await.map_err(|e| Error::Internal(format!("write to shim: {e}")))?;
            self.input.flush().await.map_err(|e| Error::Internal(format!("write to shim: {e}")))?;
            self.read_answer(id, output_limit).await
        };
        let answer = tokio::time::timeout(timeout + ANSWER_SLACK, exchange).await;
        self.last_used = Instant::now();
        match answer {
            Ok(Ok((a, stdout, stderr))) => {
                let reusable = a.clean && !a.timed_out && !a.truncated && !a.oom_killed && a.signal.is_none();
                let times = ShimTimes { start_ns: a.start_ns, end_ns: a.end_ns };
                let outcome = Outcome {
                    result: ExecuteResult {
                        exit_code: a.exit_code,
                        stdout,
                        stderr,
                        duration_ms: a.duration_ms,
                        timed_out: a.timed_out,
                        truncated: a.truncated,
                        oom_killed: a.oom_killed,
                        signal: a.signal,
                    },
                    reusable,
                };
                (outcome, times)
            }
            // The shim died (the kernel's OOM killer may have picked it), lied about the
            // protocol, or hung: the sandbox is done for.
            Ok(Err(e)) => (self.broken(e.to_string(), started, false).await, ShimTimes::default()),
            Err(_) => (self.broken("no answer in time".into(), started, true).await, ShimTimes::default()),
        }
    }

    async fn broken(&mut self, why: String, started: Instant, timed_out: bool) -> Outcome {
        warn!(runtime = %self.runtime, %why, "sandbox stopped answering; destroying it");
        let oom_killed = self.sandbox.oom_killed().await;
        Outcome {
            result: ExecuteResult {
                exit_code: None,
                stdout: Vec::new(),
                stderr: b"souq: the sandbox ended unexpectedly\n".to_vec(),
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                timed_out,
                truncated: false,
                oom_killed,
                signal: Some(9),
            },
            reusable: false,
        }
    }

    async fn read_answer(&mut self, id: u64, output_limit: usize) -> Result<(Answer, Vec<u8>, Vec<u8>)> {
        let channel = |e: FrameError| Error::Internal(e.to_string());
        let answer: Answer = self.output.header().await.map_err(channel)?;
        if answer.id != id || answer.stdout_len.saturating_add(answer.stderr_len) > output_limit {
            return Err(Error::Internal("answer out of step with the request".into()));
        }
        let stdout = self.output.body(answer.stdout_len).await.map_err(channel)?;
        let stderr = self.output.body(answer.stderr_len).await.map_err(channel)?;
        Ok((answer, stdout, stderr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::images;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_traceparent_joins_the_header_only_when_given_and_short() {
        let with = request_header(7, 3, 2, Duration::from_secs(2), 100, Some(TP));
        assert!(with.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&with).unwrap();
        assert_eq!((v["v"].as_u64(), v["id"].as_u64(), v["timeout_ms"].as_u64()), (Some(1), Some(7), Some(2000)));
        assert_eq!(v["traceparent"], TP);
        for tp in [None, Some("0".repeat(souq_proto::trace::MAX_TRACEPARENT + 1))] {
            let without = request_header(7, 3, 2, Duration::from_secs(2), 100, tp.as_deref());
            let v: serde_json::Value = serde_json::from_str(&without).unwrap();
            assert_eq!((v["code_len"].as_u64(), v.get("traceparent")), (Some(3), None));
        }
    }

    #[test]
    fn answers_parse_with_and_without_the_shims_times() {
        let base = r#""id":1,"exit_code":0,"signal":null,"timed_out":false,"truncated":false,"oom_killed":false,"duration_ms":3,"stdout_len":0,"stderr_len":0,"clean":true"#;
        let a: Answer = serde_json::from_str(&format!("{{{base}}}")).unwrap();
        assert_eq!((a.start_ns, a.end_ns), (0, 0));
        // Past 2^53: a double would round them; u64 keeps every digit.
        let a: Answer = serde_json::from_str(&format!(
            "{{{base},\"start_ns\":1796155117488720827,\"end_ns\":1796155117495975776}}"
        ))
        .unwrap();
        assert_eq!((a.start_ns, a.end_ns), (1_796_155_117_488_720_827, 1_796_155_117_495_975_776));
    }

    /// Starts a session of each runtime on the real Docker Engine and runs, with and
    /// without a traceparent, a program that prints `TRACEPARENT`.
    #[tokio::test(flavor = "multi_thread")]
    async fn each_runtime_passes_the_traceparent_on_and_reports_its_times() {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("souq-st-{pid}"));
        images::write_sources(&dir.join("runtimes")).unwrap();
        let images = images::script_tags(&dir.join("runtimes")).await.unwrap();
        let docker = Docker::connect_with_local_defaults().unwrap();
        let channels = dir.join("ch");
        std::fs::create_dir_all(&channels).unwrap();
        let programs = [
            (Runtime::Python, "import os\nprint(os.environ.get('TRACEPARENT'))\n", "None\n"),
            (Runtime::Nodejs, "console.log(process.env.TRACEPARENT)\n", "undefined\n"),
            (
                Runtime::Go,
                "package main\nimport (\"fmt\"; \"os\")\nfunc main() { fmt.Println(os.Getenv(\"TRACEPARENT\")) }\n",
                "\n",
            ),
        ];
        let limits = Limits::default();
        for (runtime, code, unset) in programs {
            let image = &images[&runtime];
            let node = format!("souq-test-helper-{pid}");
            let mut s = Session::start(&docker, &node, image, runtime, &limits, &channels).await.unwrap();
            for (tp, printed) in [(Some(TP), format!("{TP}\n")), (None, unset.to_owned())] {
                let sent = SystemTime::now();
                let (out, times) = s.run_timed(code, b"", Duration::from_secs(60), 1 << 20, tp).await;
                let received = SystemTime::now();
                let r = &out.result;
                assert_eq!(r.exit_code, Some(0), "{runtime}: {}", String::from_utf8_lossy(&r.stderr));
                assert_eq!(String::from_utf8_lossy(&r.stdout), printed, "{runtime}");
                let (start, end) = times.bounded(sent, received).unwrap_or_else(|| panic!("{runtime}: {times:?}"));
                // One host, one clock; node's is anchored on Date.now(), a millisecond coarse.
                let slack = Duration::from_millis(5);
                assert!(start + slack >= sent && end <= received + slack && start < end, "{runtime}: {times:?}");
                assert!(end.duration_since(start).unwrap() <= received.duration_since(sent).unwrap() + slack);
            }
            s.destroy().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Collects the spans a test's tracer ends.
    #[derive(Debug, Clone, Default)]
    struct Collected(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collected {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// With an OpenTelemetry layer, as the cli installs it: the run sees the request
    /// span's context as `TRACEPARENT`, and the shim's time is a `shim.execute` span, a
    /// child of the request span.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_traced_run_sees_its_traceparent_and_reports_a_shim_span() {
        use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        use tracing_subscriber::layer::SubscriberExt;

        let collected = Collected::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .with_simple_exporter(collected.clone())
            .build();
        souq_proto::trace::set_shim_tracer(provider.tracer(souq_proto::trace::SHIM_SCOPE));
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let _guard = tracing::subscriber::set_default(subscriber);

        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("souq-st-tr-{pid}"));
        images::write_sources(&dir.join("runtimes")).unwrap();
        let images = images::script_tags(&dir.join("runtimes")).await.unwrap();
        let docker = Docker::connect_with_local_defaults().unwrap();
        let channels = dir.join("ch");
        std::fs::create_dir_all(&channels).unwrap();
        let node = format!("souq-test-helper-{pid}");
        let limits = Limits::default();
        let mut s = Session::start(&docker, &node, &images[&Runtime::Python], Runtime::Python, &limits, &channels)
            .await
            .unwrap();
        let request = tracing::info_span!("grpc");
        let sc = request.context().span().span_context().clone();
        let code = "import os\nprint(os.environ.get('TRACEPARENT'))\n";
        let out = s.run(code, b"", Duration::from_secs(30), 1 << 20).instrument(request.clone()).await;
        s.destroy().await;
        let _ = std::fs::remove_dir_all(&dir);

        let printed = String::from_utf8_lossy(&out.result.stdout).trim_end().to_owned();
        let (trace_id, span_id) = (sc.trace_id().to_string(), sc.span_id().to_string());
        assert_eq!(printed, format!("00-{trace_id}-{span_id}-01"), "the run sees the request span's context");
        let spans = collected.0.lock().unwrap().clone();
        let shim = spans.iter().find(|s| s.name == "shim.execute").expect("a shim.execute span");
        assert_eq!(shim.span_context.trace_id(), sc.trace_id());
        assert_eq!(shim.parent_span_id, sc.span_id());
        assert_eq!(shim.instrumentation_scope.name(), souq_proto::trace::SHIM_SCOPE);
        assert!(shim.start_time <= shim.end_time);
        let attr = |k: &str| shim.attributes.iter().find(|a| a.key.as_str() == k).map(|a| a.value.to_string());
        assert_eq!((attr("souq.runtime"), attr("souq.exit_code")), (Some("python".into()), Some("0".into())));
    }
}
