//! Tests of the serve channel against a fake shim on a real Unix socket (a channel
//! directory, as in production): framing, pipelining, timeouts and breakage.
use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::{
    io::AsyncWriteExt,
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
};

use super::*;
use crate::sandbox::channel::{Channel, SOCKET_NAME};

/// The shim's end of a channel.
pub(crate) struct FakeShim {
    pub(crate) reader: FrameReader<OwnedReadHalf>,
    pub(crate) writer: OwnedWriteHalf,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Load {
    pub(crate) v: u32,
    pub(crate) op: String,
    pub(crate) code_len: usize,
    pub(crate) output_limit: usize,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Req {
    pub(crate) id: u64,
    pub(crate) len: usize,
    #[serde(default)]
    pub(crate) traceparent: Option<String>,
}

impl FakeShim {
    /// Reads the load frame and returns the code.
    pub(crate) async fn read_load(&mut self) -> Vec<u8> {
        let load: Load = self.reader.header().await.unwrap();
        assert_eq!((load.v, load.op.as_str()), (1, "load"));
        assert!(load.output_limit > 0);
        self.reader.body(load.code_len).await.unwrap()
    }

    pub(crate) async fn ready(&mut self) {
        self.writer.write_all(b"{\"ready\":true}\n").await.unwrap();
    }

    pub(crate) async fn request(&mut self) -> Option<(u64, Vec<u8>)> {
        self.request_header().await.map(|(req, body)| (req.id, body))
    }

    /// The next request with its whole header.
    pub(crate) async fn request_header(&mut self) -> Option<(Req, Vec<u8>)> {
        let req: Req = self.reader.header().await.ok()?;
        let body = self.reader.body(req.len).await.ok()?;
        Some((req, body))
    }

    pub(crate) fn answer(out: &mut Vec<u8>, id: u64, kind: &str, body: &[u8]) {
        out.extend_from_slice(format!("{{\"id\":{id},\"type\":\"{kind}\",\"len\":{}}}\n", body.len()).as_bytes());
        out.extend_from_slice(body);
    }

    /// Answers every request with its own event, as JSON, until the channel closes.
    pub(crate) async fn echo(mut self) {
        while let Some((id, event)) = self.request().await {
            let mut out = Vec::new();
            Self::answer(&mut out, id, "json", &event);
            if self.writer.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

/// A fake shim connected to the agent's end, which is returned unloaded.
pub(crate) async fn connect() -> (UnixStream, FakeShim) {
    // One root for every test run: each channel in it is removed when dropped.
    let root = std::env::temp_dir().join("souq-serve-tests");
    let mut channel = Channel::open(&root).unwrap();
    let shim = UnixStream::connect(channel.dir().join(SOCKET_NAME)).await.unwrap();
    let agent = channel.accept(Duration::from_secs(5)).await.unwrap();
    let (r, w) = shim.into_split();
    (agent, FakeShim { reader: FrameReader::new(r), writer: w })
}

pub(crate) const LIMITS: ServeLimits =
    ServeLimits { output_limit: 1024 * 1024, load_timeout: Duration::from_secs(120), max_in_flight: 1024 };

async fn loaded(limits: ServeLimits) -> (ServeClient, FakeShim) {
    let (agent, mut shim) = connect().await;
    let shim_side = async {
        assert_eq!(shim.read_load().await, b"def handler(e): return e");
        shim.ready().await;
    };
    let (client, ()) = tokio::join!(load(agent, b"def handler(e): return e", limits), shim_side);
    (client.unwrap(), shim)
}

#[tokio::test]
async fn pipelined_calls_are_answered_in_order() {
    let (client, mut shim) = loaded(LIMITS).await;
    let client = Arc::new(client);
    const N: usize = 200;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..N {
        let c = client.clone();
        calls.spawn(async move { (i, c.call(format!("{{\"n\":{i}}}").into_bytes(), Duration::from_secs(10)).await) });
    }
    // The shim takes every call before answering any: all N are in flight at once.
    let mut requests = Vec::new();
    while requests.len() < N {
        requests.push(shim.request().await.unwrap());
    }
    assert!(requests.windows(2).all(|w| w[1].0 == w[0].0 + 1), "ids are sequential");
    assert_eq!(client.in_flight(), N);
    let mut out = Vec::new();
    for (id, event) in &requests {
        let kind = if id % 3 == 0 { "text" } else if id % 3 == 1 { "json" } else { "error" };
        FakeShim::answer(&mut out, *id, kind, event);
    }
    shim.writer.write_all(&out).await.unwrap();
    while let Some(done) = calls.join_next().await {
        let (i, answer) = done.unwrap();
        let answer = answer.unwrap();
        assert_eq!(answer.body, format!("{{\"n\":{i}}}").into_bytes(), "each caller gets its own answer");
    }
    assert_eq!(client.in_flight(), 0);
    // The kinds map onto the wire's.
    tokio::spawn(shim.echo());
    let a = client.call(b"[1]".to_vec(), Duration::from_secs(10)).await.unwrap();
    assert_eq!((a.kind, a.body.as_slice()), (ResultKind::Json, &b"[1]"[..]));
}

#[tokio::test]
async fn a_load_error_is_rejected_with_its_message() {
    let (agent, mut shim) = connect().await;
    let shim_side = async {
        shim.read_load().await;
        let msg = b"  File \"handler.py\", line 1\nSyntaxError: invalid syntax\n";
        let mut out = format!("{{\"ready\":false,\"error_len\":{}}}\n", msg.len()).into_bytes();
        out.extend_from_slice(msg);
        shim.writer.write_all(&out).await.unwrap();
    };
    let (loaded, ()) = tokio::join!(load(agent, b"def", LIMITS), shim_side);
    let Err(LoadError::Rejected(msg)) = loaded else { panic!("expected a rejection") };
    assert!(msg.ends_with("SyntaxError: invalid syntax"), "{msg:?}");
}

#[tokio::test(start_paused = true)]
async fn a_load_that_never_answers_times_out() {
    let (agent, mut shim) = connect().await;
    let limits = ServeLimits { load_timeout: Duration::from_secs(120), ..LIMITS };
    let shim_side = async {
        shim.read_load().await;
        shim
    };
    let (loaded, _shim) = tokio::join!(load(agent, b"package main", limits), shim_side);
    assert_eq!(loaded.err(), Some(LoadError::Broken(Broken::LoadTimeout(Duration::from_secs(120)))));
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_timeout_breaks_the_channel_and_fails_the_rest() {
    let (client, mut shim) = loaded(LIMITS).await;
    let client = Arc::new(client);
    let stuck = client.clone();
    let stuck = tokio::spawn(async move { stuck.call(b"1".to_vec(), Duration::from_millis(100)).await });
    let behind = client.clone();
    let behind = tokio::spawn(async move { behind.call(b"2".to_vec(), Duration::from_secs(10)).await });
    // The shim reads both and answers neither: the first call's handler hangs.
    shim.request().await.unwrap();
    shim.request().await.unwrap();
    assert_eq!(stuck.await.unwrap(), Err(CallError::Timeout));
    assert_eq!(behind.await.unwrap(), Err(CallError::Lost), "a call behind the stuck one is failed over");
    assert_eq!(client.broken().await, Broken::Timeout(Duration::from_millis(100)));
    assert_eq!(client.call(b"3".to_vec(), Duration::from_secs(1)).await, Err(CallError::Unavailable));
    assert_eq!(client.in_flight(), 0, "permits come back when the channel breaks");
}

#[tokio::test]
async fn a_closed_channel_fails_calls_in_flight() {
    let (client, mut shim) = loaded(LIMITS).await;
    let client = Arc::new(client);
    let c = client.clone();
    let call = tokio::spawn(async move { c.call(b"{}".to_vec(), Duration::from_secs(10)).await });
    shim.request().await.unwrap();
    drop(shim);
    assert_eq!(call.await.unwrap(), Err(CallError::Lost));
    assert!(matches!(client.broken().await, Broken::Closed(_)));
}

#[tokio::test]
async fn calls_past_the_in_flight_bound_are_refused_at_once() {
    let (client, mut shim) = loaded(ServeLimits { max_in_flight: 2, ..LIMITS }).await;
    let client = Arc::new(client);
    for _ in 0..2 {
        let c = client.clone();
        tokio::spawn(async move { c.call(b"{}".to_vec(), Duration::from_secs(60)).await });
    }
    shim.request().await.unwrap();
    shim.request().await.unwrap();
    assert_eq!(client.call(b"{}".to_vec(), Duration::from_secs(1)).await, Err(CallError::Busy));
}

#[tokio::test]
async fn an_oversized_answer_breaks_the_channel() {
    let (client, mut shim) = loaded(LIMITS).await;
    let client = Arc::new(client);
    let c = client.clone();
    let call = tokio::spawn(async move { c.call(b"{}".to_vec(), Duration::from_secs(10)).await });
    let (id, _) = shim.request().await.unwrap();
    let header = format!("{{\"id\":{id},\"type\":\"json\",\"len\":{}}}\n", MAX_ANSWER_BYTES + 1);
    shim.writer.write_all(header.as_bytes()).await.unwrap();
    let limit = LIMITS.output_limit;
    assert_eq!(call.await.unwrap(), Err(CallError::TooLarge { len: MAX_ANSWER_BYTES + 1, limit }));
    assert!(matches!(client.broken().await, Broken::Protocol(m) if m.contains("bound")));
}

/// A handler that went around its shim (say, wrote its own frame) and answered past the
/// output limit: that call fails, the bytes are dropped as they come, the next call is
/// answered on the same channel.
#[tokio::test]
async fn an_answer_over_the_output_limit_fails_its_call_and_the_channel_serves_on() {
    let limits = ServeLimits { output_limit: 1024, ..LIMITS };
    let (client, mut shim) = loaded(limits).await;
    let client = Arc::new(client);
    let (c1, c2) = (client.clone(), client.clone());
    let big = tokio::spawn(async move { c1.call(b"{}".to_vec(), Duration::from_secs(10)).await });
    let (id, _) = shim.request().await.unwrap();
    let next = tokio::spawn(async move { c2.call(b"[2]".to_vec(), Duration::from_secs(10)).await });
    let (id2, event2) = shim.request().await.unwrap();
    let mut out = Vec::new();
    FakeShim::answer(&mut out, id, "json", &vec![b'7'; 8 * 1024 * 1024]);
    FakeShim::answer(&mut out, id2, "json", &event2);
    shim.writer.write_all(&out).await.unwrap();
    assert_eq!(big.await.unwrap(), Err(CallError::TooLarge { len: 8 * 1024 * 1024, limit: 1024 }));
    assert_eq!(next.await.unwrap().unwrap().body, b"[2]");
    assert_eq!(client.in_flight(), 0);
    tokio::spawn(shim.echo());
    assert_eq!(client.call(b"[3]".to_vec(), Duration::from_secs(10)).await.unwrap().body, b"[3]");
}

#[tokio::test]
async fn an_answer_out_of_order_breaks_the_channel() {
    let (client, mut shim) = loaded(LIMITS).await;
    let client = Arc::new(client);
    let c = client.clone();
    let call = tokio::spawn(async move { c.call(b"{}".to_vec(), Duration::from_secs(10)).await });
    let (id, _) = shim.request().await.unwrap();
    let mut out = Vec::new();
    FakeShim::answer(&mut out, id + 7, "json", b"1");
    shim.writer.write_all(&out).await.unwrap();
    assert_eq!(call.await.unwrap(), Err(CallError::Lost));
    assert!(matches!(client.broken().await, Broken::Protocol(_)));
}

/// The call carries the caller's traceparent (when there is one) to the shim, and the
/// shim's `start_ns`/`end_ns` come back with the answer, whole (past 2^53), or as none.
#[tokio::test]
async fn the_traceparent_goes_out_and_the_shims_times_come_back() {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (client, mut shim) = loaded(LIMITS).await;
    let client = Arc::new(client);
    let c = client.clone();
    let traced =
        tokio::spawn(async move { c.call_timed(b"[1]".to_vec(), Duration::from_secs(10), Some(TP.into())).await });
    let (req, event) = shim.request_header().await.unwrap();
    assert_eq!((req.traceparent.as_deref(), event.as_slice()), (Some(TP), &b"[1]"[..]));
    let c = client.clone();
    let plain = tokio::spawn(async move { c.call_timed(b"[2]".to_vec(), Duration::from_secs(10), None).await });
    let (req2, _) = shim.request_header().await.unwrap();
    assert_eq!(req2.traceparent, None, "no traceparent, no key");
    let mut out = format!(
        "{{\"id\":{},\"type\":\"json\",\"len\":1,\"start_ns\":1796155117488720827,\"end_ns\":1796155117495975776}}\n1",
        req.id
    )
    .into_bytes();
    FakeShim::answer(&mut out, req2.id, "json", b"2");
    shim.writer.write_all(&out).await.unwrap();
    let (answer, times) = traced.await.unwrap().unwrap();
    assert_eq!(answer.body, b"1");
    assert_eq!(times, ShimTimes { start_ns: 1_796_155_117_488_720_827, end_ns: 1_796_155_117_495_975_776 });
    let (answer, times) = plain.await.unwrap().unwrap();
    assert_eq!((answer.body.as_slice(), times), (&b"2"[..], ShimTimes::default()));
    // The public call, untraced here, still answers.
    tokio::spawn(shim.echo());
    assert_eq!(client.call(b"[3]".to_vec(), Duration::from_secs(10)).await.unwrap().body, b"[3]");
}
