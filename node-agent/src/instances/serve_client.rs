//! Serve mode: the one connection to an instance's shim, multiplexed. The handler is
//! loaded once; then calls are pipelined, many in flight, and the shim answers them in
//! request order. A writer task sends every queued call in one write; a reader task
//! matches each answer to the oldest call in flight. The hot path takes no lock and
//! spawns nothing: a call is a permit, a queue push and a oneshot.
//!
//! The frames (headers are one line of JSON, then exactly `len` bytes):
//! - agent → shim, once: `{"v":1,"op":"load","code_len":N,"output_limit":L}` + the code;
//! - shim → agent, once: `{"ready":true}`, or `{"ready":false,"error_len":N}` + the
//!   compiler's or interpreter's message, after which the shim exits;
//! - agent → shim, pipelined: `{"id":I,"len":N}` + the event as JSON, with
//!   `"traceparent":"00-<32 hex>-<16 hex>-<2 hex>"` added when the call is traced (the
//!   shim accepts it and does nothing more with it);
//! - shim → agent, in request order: `{"id":I,"type":"json"|"text"|"error","len":N,
//!   "start_ns":S,"end_ns":E}` + N bytes, where S and E are the shim's wall clock (Unix
//!   epoch nanoseconds) when it had read the call and when it had its answer; they
//!   become the `shim.invoke` span (see [`ShimTimes`]).
//!
//! The shim refuses answers over the output limit itself, but the shim runs in the
//! handler's own process, which can patch it or write frames of its own. So the reader
//! enforces the limit too: a longer answer is read and dropped, a chunk at a time, and
//! its call fails with [`CallError::TooLarge`]; the channel serves on.
use std::{
    fmt,
    io::Write as _,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use opentelemetry::KeyValue;
use serde::Deserialize;
use souq_proto::agent::ResultKind;
use tokio::{
    io::AsyncWriteExt,
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
};
use tokio_util::sync::CancellationToken;

use crate::sandbox::frame::{FrameError, FrameReader, ShimTimes};

/// Largest answer the channel reads past, whatever the output limit; a header claiming
/// more breaks the channel. (Answers over the output limit are dropped unbuffered.)
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of a load error read; the rest is cut.
pub const MAX_LOAD_ERROR: usize = 64 * 1024;
/// Largest batch of calls sent in one write; more wait for the next.
const MAX_BATCH: usize = 256 * 1024;
/// The writer's buffer is given back past this size, so one burst does not pin memory.
const KEEP_BATCH: usize = 1024 * 1024;

/// The bounds of one serve channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most bytes of one answer, told to the shim (`output_limit`).
    pub output_limit: usize,
    /// How long the handler may take to load (Go compiles here).
    pub load_timeout: Duration,
    /// Most calls in flight; past it a call is refused at once ([`CallError::Busy`]).
    pub max_in_flight: usize,
}

/// The handler's answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What `body` is.
    pub kind: ResultKind,
    /// The return value as JSON, its text, or the error message.
    pub body: Vec<u8>,
}

/// Why a call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// As many calls as allowed are in flight already; nothing was sent.
    Busy,
    /// The channel was broken before the call was handed to it; nothing was sent.
    Unavailable,
    /// The channel broke after the call was handed to it, before its answer came. The
    /// call may have run or not: the shim may have been executing it.
    Lost,
    /// No answer within the timeout. The channel is broken now (see [`Broken::Timeout`]).
    Timeout,
    /// The answer was `len` bytes, over the output limit of `limit`: it was dropped
    /// unread. Only a handler that went around its shim can send one.
    TooLarge {
        /// The answer's length, as its header said.
        len: usize,
        /// The output limit.
        limit: usize,
    },
}

/// Why a channel stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The shim closed the channel, or the socket failed: the process exited or was killed.
    Closed(String),
    /// The shim broke the protocol.
    Protocol(String),
    /// A call got no answer within its timeout: the handler is stuck, and since answers
    /// come in order, every call behind it would wait too.
    Timeout(Duration),
    /// The handler did not load in time.
    LoadTimeout(Duration),
    /// The agent closed it (stop, restart, shutdown).
    Stopped,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Broken::Closed(why) => f.write_str(why),
            Broken::Protocol(why) => write!(f, "the shim broke the protocol: {why}"),
            Broken::Timeout(t) => write!(f, "a call ran past its timeout of {} ms, so the handler was restarted", t.as_millis()),
            Broken::LoadTimeout(t) => write!(f, "the handler did not load within {} s", t.as_secs()),
            Broken::Stopped => f.write_str("stopped by the agent"),
        }
    }
}

impl From<FrameError> for Broken {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Closed | FrameError::Io(_) => Broken::Closed(e.to_string()),
            FrameError::HeaderTooLong | FrameError::Malformed(_) => Broken::Protocol(e.to_string()),
        }
    }
}

/// Why a handler is not serving after [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The shim could not load it: the compiler's or interpreter's message. Retrying the
    /// same code would fail the same way.
    Rejected(String),
    /// The channel broke or the shim did not answer in time.
    Broken(Broken),
}

#[derive(Debug, Deserialize)]
struct ReadyHeader {
    ready: bool,
    #[serde(default)]
    error_len: usize,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AnswerType {
    Json,
    Text,
    Error,
}

#[derive(Debug, Deserialize)]
struct AnswerHeader {
    id: u64,
    #[serde(rename = "type")]
    kind: AnswerType,
    len: usize,
    #[serde(default)]
    start_ns: u64,
    #[serde(default)]
    end_ns: u64,
}

/// What the caller and the two tasks share: whether, and why, the channel broke.
#[derive(Debug, Default)]
struct Shared {
    broken: CancellationToken,
    why: OnceLock<Broken>,
}

impl Shared {
    /// The first reason wins; later ones are consequences of it.
    fn break_with(&self, why: Broken) {
        let _ = self.why.set(why);
        self.broken.cancel();
    }
}

/// What a call's caller is sent: the answer with the shim's times of it, or the error.
type Reply = Result<(Answer, ShimTimes), CallError>;

/// A call on its way to the writer. The permit travels with it until its answer is read,
/// so it bounds the calls the shim has not answered, not only those waiting here.
struct Request {
    event: Vec<u8>,
    /// The caller's trace context, for the shim.
    traceparent: Option<String>,
    reply: oneshot::Sender<Reply>,
    permit: OwnedSemaphorePermit,
}

/// A call sent, waiting for its answer.
struct Pending {
    id: u64,
    reply: oneshot::Sender<Reply>,
    _permit: OwnedSemaphorePermit,
}

/// A loaded handler's channel. Dropping it closes the channel.
#[derive(Debug)]
pub struct ServeClient {
    requests: mpsc::UnboundedSender<Request>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    shared: Arc<Shared>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request").field("len", &self.event.len()).finish_non_exhaustive()
    }
}

/// Loads `code` into the shim connected on `stream` and, once it is ready, starts the
/// channel's writer and reader.
pub async fn load(stream: UnixStream, code: &[u8], limits: ServeLimits) -> Result<ServeClient, LoadError> {
    let (read, mut write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let handshake = async {
        let mut frame =
            format!("{{\"v\":1,\"op\":\"load\",\"code_len\":{},\"output_limit\":{}}}\n", code.len(), limits.output_limit)
                .into_bytes();
        frame.extend_from_slice(code);
        write
            .write_all(&frame)
            .await
            .map_err(|e| LoadError::Broken(Broken::Closed(format!("write to the shim: {e}"))))?;
        let ready: ReadyHeader = reader.header().await.map_err(|e| LoadError::Broken(e.into()))?;
        if ready.ready {
            return Ok(());
        }
        let len = ready.error_len.min(MAX_LOAD_ERROR);
        let text = reader.body(len).await.map_err(|e| LoadError::Broken(e.into()))?;
        let mut message = String::from_utf8_lossy(&text).trim_end().to_owned();
        if ready.error_len > len {
            message.push_str("\n… (cut)");
        }
        if message.is_empty() {
            message = "the handler failed to load".into();
        }
        Err(LoadError::Rejected(message))
    };
    match tokio::time::timeout(limits.load_timeout, handshake).await {
        Err(_) => Err(LoadError::Broken(Broken::LoadTimeout(limits.load_timeout))),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(ServeClient::spawn(reader, write, limits)),
    }
}

impl ServeClient {
    fn spawn(reader: FrameReader<OwnedReadHalf>, writer: OwnedWriteHalf, limits: ServeLimits) -> ServeClient {
        let shared = Arc::new(Shared::default());
        let (requests, queue) = mpsc::unbounded_channel();
        let (sent, pending) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(writer, queue, sent, shared.clone()));
        tokio::spawn(read_loop(reader, pending, limits.output_limit, shared.clone()));
        let max_in_flight = limits.max_in_flight.max(1);
        ServeClient { requests, in_flight: Arc::new(Semaphore::new(max_in_flight)), max_in_flight, shared }
    }

    /// Sends `event` to the handler and waits up to `timeout` for its answer. Past the
    /// timeout the channel is broken on purpose: its answers come in order, so the stuck
    /// call would hold up every call behind it. The call carries the current trace
    /// context, and the shim's time on it becomes a span of the current trace.
    pub async fn call(&self, event: Vec<u8>, timeout: Duration) -> Result<Answer, CallError> {
        let traceparent = souq_proto::trace::current_traceparent();
        let sent = SystemTime::now();
        let (answer, times) = self.call_timed(event, timeout, traceparent).await?;
        let status = match answer.kind {
            ResultKind::Json => "json",
            ResultKind::Text => "text",
            _ => "error",
        };
        times.record("shim.invoke", sent, SystemTime::now(), vec![KeyValue::new("souq.result_kind", status)]);
        Ok(answer)
    }

    /// [`ServeClient::call`] with the `traceparent` given, returning the shim's times.
    async fn call_timed(&self, event: Vec<u8>, timeout: Duration, traceparent: Option<String>) -> Reply {
        if self.shared.broken.is_cancelled() {
            return Err(CallError::Unavailable);
        }
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| CallError::Busy)?;
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { event, traceparent, reply, permit }).map_err(|_| CallError::Unavailable)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(CallError::Lost),
            Err(_) => {
                self.shared.break_with(Broken::Timeout(timeout));
                Err(CallError::Timeout)
            }
        }
    }

    /// Closes the channel; calls in flight fail with [`CallError::Lost`].
    pub fn close(&self) {
        self.shared.break_with(Broken::Stopped);
    }

    /// Waits until the channel breaks, and says why.
    pub async fn broken(&self) -> Broken {
        self.shared.broken.cancelled().await;
        self.shared.why.get().cloned().unwrap_or(Broken::Stopped)
    }

    /// Calls sent and not yet answered, or waiting to be sent.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }
}

impl Drop for ServeClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// Sends calls as they come, each batch of queued calls in one write. Each call is handed
/// to the reader before its bytes go out, so its answer always finds it.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Request>,
    sent: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
) {
    let mut next_id: u64 = 1;
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            () = shared.broken.cancelled() => return,
            r = queue.recv() => r,
        };
        // Every sender is gone: the client was dropped.
        let Some(mut request) = first else { return shared.break_with(Broken::Stopped) };
        batch.clear();
        loop {
            // A caller that gave up (its gRPC request was cancelled) is not sent at all.
            if !request.reply.is_closed() {
                let id = next_id;
                next_id += 1;
                // Writing to a Vec cannot fail.
                let _ = write!(batch, "{{\"id\":{id},\"len\":{}", request.event.len());
                if let Some(tp) = request.traceparent.as_deref().filter(|t| t.len() <= souq_proto::trace::MAX_TRACEPARENT)
                    && let Ok(quoted) = serde_json::to_string(tp)
                {
                    let _ = write!(batch, ",\"traceparent\":{quoted}");
                }
                batch.extend_from_slice(b"}\n");
                batch.extend_from_slice(&request.event);
                let _ = sent.send(Pending { id, reply: request.reply, _permit: request.permit });
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            match queue.try_recv() {
                Ok(r) => request = r,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let written = tokio::select! {
            biased;
            () = shared.broken.cancelled() => return,
            r = writer.write_all(&batch) => r,
        };
        if let Err(e) = written {
            return shared.break_with(Broken::Closed(format!("write to the shim: {e}")));
        }
        if batch.capacity() > KEEP_BATCH {
            batch = Vec::with_capacity(64 * 1024);
        }
    }
}

/// Reads answers and completes the oldest call in flight with each; an answer over
/// `output_limit` is dropped unbuffered and its call fails with [`CallError::TooLarge`].
async fn read_loop(
    mut reader: FrameReader<OwnedReadHalf>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    output_limit: usize,
    shared: Arc<Shared>,
) {
    let why = loop {
        let header = tokio::select! {
            biased;
            () = shared.broken.cancelled() => return,
            h = reader.header::<AnswerHeader>() => h,
        };
        let header = match header {
            Ok(h) => h,
            Err(e) => break e.into(),
        };
        let Some(call) = pending.recv().await else { break Broken::Stopped };
        if header.id != call.id {
            break Broken::Protocol(format!("answer {} came when answer {} was due", header.id, call.id));
        }
        let over_bound = || Broken::Protocol(format!("an answer of {} bytes is over the {MAX_ANSWER_BYTES}-byte bound", header.len));
        if header.len > output_limit {
            // The caller learns why at once, even when the channel breaks below.
            let _ = call.reply.send(Err(CallError::TooLarge { len: header.len, limit: output_limit }));
            if header.len > MAX_ANSWER_BYTES {
                break over_bound();
            }
            let skipped = tokio::select! {
                biased;
                () = shared.broken.cancelled() => return,
                s = reader.skip(header.len) => s,
            };
            match skipped {
                Ok(()) => continue,
                Err(e) => break e.into(),
            }
        }
        if header.len > MAX_ANSWER_BYTES {
            break over_bound();
        }
        let body = tokio::select! {
            biased;
            () = shared.broken.cancelled() => return,
            b = reader.body(header.len) => b,
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => break e.into(),
        };
        let kind = match header.kind {
            AnswerType::Json => ResultKind::Json,
            AnswerType::Text => ResultKind::Text,
            AnswerType::Error => ResultKind::Error,
        };
        // The caller may have given up; its permit is released all the same.
        let times = ShimTimes { start_ns: header.start_ns, end_ns: header.end_ns };
        let _ = call.reply.send(Ok((Answer { kind, body }, times)));
    };
    // Dropping `pending` fails every call still waiting with `Unavailable`.
    shared.break_with(why);
}

#[cfg(test)]
#[path = "serve_client_tests.rs"]
pub(crate) mod tests;
