//! The durable metering stream: a Redis stream `souq:usage:<edge id>` per edge.
//!
//! One writer task group-commits the events of concurrent requests: it pipelines their
//! XADDs in one round trip, then acknowledges each request, which only then answers its
//! client. Ids are chosen by the writer (`<ms>-<n>`, increasing), so a pipeline whose
//! outcome is unknown (a timeout, a dropped connection) can be sent again without adding
//! anything twice: an id Redis already holds is refused as "equal or smaller", and that
//! refusal means "already written". While Redis fails, events wait in memory (bounded
//! by the meter's capacity) and requests are acknowledged at once.
use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prost::Message;
use redis::{RedisError, RedisResult, Value, aio::ConnectionManager};
use souq_proto::routes::UsageEvent;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{BATCH, event::Position};

/// Most XADDs in one pipeline.
const MAX_PIPELINE: usize = 1_000;
/// Longest one pipeline may take before its outcome counts as unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Waits between attempts while Redis fails.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a draining edge keeps trying to hand its last events to a failing Redis.
const DRAIN_PATIENCE: Duration = Duration::from_secs(5);
/// The stream entry's one field: the event, protobuf-encoded, without its position.
const FIELD: &str = "e";

/// The stream key of an edge.
pub fn stream_key(edge_id: &str) -> String {
    format!("souq:usage:{edge_id}")
}

/// An event on its way to the stream.
pub struct Pending {
    /// The event.
    pub event: UsageEvent,
    /// Its share of the meter's capacity, released once it is in Redis.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Told when the event is in Redis, or waits in memory because Redis fails.
    pub ack: Option<oneshot::Sender<()>>,
}

/// One edge's stream: the writer's inbox, and reads and trims for the flusher.
pub struct RedisStream {
    key: String,
    conn: ConnectionManager,
    tx: mpsc::UnboundedSender<Pending>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
    /// Events written since the flusher was last woken.
    unflushed: AtomicU64,
}

impl RedisStream {
    /// The stream of `edge_id` on `conn`.
    pub fn new(conn: ConnectionManager, edge_id: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        RedisStream { key: stream_key(edge_id), conn, tx, rx: Mutex::new(Some(rx)), unflushed: AtomicU64::new(0) }
    }

    /// Hands an event to the writer; false when the writer is gone.
    pub fn submit(&self, p: Pending) -> bool {
        self.tx.send(p).is_ok()
    }

    /// The writer task, once (the first caller gets it). `flush_now` is woken when a full
    /// batch waits; `drained` says no request will submit any more.
    pub fn writer(self: &Arc<Self>, flush_now: Arc<Notify>, drained: CancellationToken) -> Option<Writer> {
        let rx = self.rx.lock().ok()?.take()?;
        Some(Writer {
            stream: self.clone(),
            rx,
            flush_now,
            drained,
            buf: VecDeque::new(),
            ids: IdGen::default(),
            give_up: None,
        })
    }

    /// The first `max` entries, oldest first, as events with their positions; and the ids
    /// of entries that do not decode (to be deleted, never sent).
    pub async fn read(&self, max: usize) -> RedisResult<(Vec<UsageEvent>, Vec<String>)> {
        let mut conn = self.conn.clone();
        let reply: Value =
            redis::cmd("XRANGE").arg(&self.key).arg("-").arg("+").arg("COUNT").arg(max).query_async(&mut conn).await?;
        Ok(decode_range(reply))
    }

    /// Deletes every entry at or before `through`.
    pub async fn delete_through(&self, through: Position) -> RedisResult<u64> {
        let mut conn = self.conn.clone();
        redis::cmd("XTRIM")
            .arg(&self.key)
            .arg("MINID")
            .arg(through.successor().to_string())
            .query_async(&mut conn)
            .await
    }

    /// Deletes the entries `ids`.
    pub async fn delete(&self, ids: &[String]) -> RedisResult<u64> {
        let mut conn = self.conn.clone();
        redis::cmd("XDEL").arg(&self.key).arg(ids).query_async(&mut conn).await
    }

    /// How many entries the stream holds.
    pub async fn len(&self) -> RedisResult<u64> {
        let mut conn = self.conn.clone();
        redis::cmd("XLEN").arg(&self.key).query_async(&mut conn).await
    }

    /// The stream's last id ever given (it survives deletions); 0-0 when there is no stream.
    async fn last_generated_id(&self) -> RedisResult<Position> {
        let mut conn = self.conn.clone();
        match redis::cmd("XINFO").arg("STREAM").arg(&self.key).query_async::<Value>(&mut conn).await {
            Ok(v) => Ok(last_generated_id_of(&v).unwrap_or_default()),
            Err(e) if e.to_string().contains("no such key") => Ok(Position::default()),
            Err(e) => Err(e),
        }
    }
}

/// The text of a bulk or simple string.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `last-generated-id` of an XINFO STREAM answer (RESP2 pairs or a RESP3 map).
fn last_generated_id_of(v: &Value) -> Option<Position> {
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Array(items) => items.chunks_exact(2).map(|p| (&p[0], &p[1])).collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    let (_, id) = pairs.into_iter().find(|(k, _)| text(k).as_deref() == Some("last-generated-id"))?;
    text(id)?.parse().ok()
}

/// The events of an XRANGE answer, and the ids of entries that do not decode.
fn decode_range(reply: Value) -> (Vec<UsageEvent>, Vec<String>) {
    let (mut events, mut corrupt) = (Vec::new(), Vec::new());
    let Value::Array(entries) = reply else { return (events, corrupt) };
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let Some(id) = parts.first().and_then(text) else { continue };
        let payload = match parts.get(1) {
            Some(Value::Array(fields)) => fields
                .chunks_exact(2)
                .find(|p| text(&p[0]).as_deref() == Some(FIELD))
                .and_then(|p| if let Value::BulkString(b) = &p[1] { Some(b.as_slice()) } else { None }),
            _ => None,
        };
        match payload.map(UsageEvent::decode) {
            Some(Ok(mut e)) if id.parse::<Position>().is_ok() => {
                e.position = id;
                events.push(e);
            }
            _ => corrupt.push(id),
        }
    }
    (events, corrupt)
}

/// Stream ids, increasing: the clock's ms while it moves on, else the next sequence.
#[derive(Debug, Default)]
struct IdGen {
    /// The last id given; `None` until synced with the stream.
    last: Option<Position>,
}

impl IdGen {
    fn next(&mut self, now_ms: u64) -> Option<Position> {
        let last = self.last?;
        let id = if now_ms > last.ms { Position { ms: now_ms, seq: 0 } } else { last.successor() };
        self.last = Some(id);
        Some(id)
    }
}

/// Whether Redis refused an XADD because the stream already holds that id or a later one.
fn is_stale_id(e: &RedisError) -> bool {
    e.to_string().contains("equal or smaller")
}

/// An event in the writer's hands.
struct Entry {
    pending: Pending,
    payload: Vec<u8>,
    /// Its id, once chosen; kept across retries.
    id: Option<Position>,
    /// A pipeline carried it and its outcome is unknown: it may already be in Redis.
    uncertain: bool,
    /// In Redis.
    done: bool,
}

impl Entry {
    fn new(pending: Pending) -> Self {
        let payload = pending.event.encode_to_vec();
        Entry { pending, payload, id: None, uncertain: false, done: false }
    }

    fn ack(&mut self) {
        if let Some(tx) = self.pending.ack.take() {
            let _ = tx.send(());
        }
    }
}

/// The group-commit writer of one stream.
pub struct Writer {
    stream: Arc<RedisStream>,
    rx: mpsc::UnboundedReceiver<Pending>,
    flush_now: Arc<Notify>,
    drained: CancellationToken,
    buf: VecDeque<Entry>,
    ids: IdGen,
    /// When a drained edge stops waiting for Redis.
    give_up: Option<tokio::time::Instant>,
}

impl Writer {
    /// Writes until no request can submit any more (`drained`) and nothing waits.
    pub async fn run(mut self) {
        let mut healthy = true;
        let mut wait = RETRY_MIN;
        loop {
            if self.buf.is_empty() {
                let next = tokio::select! {
                    p = self.rx.recv() => p,
                    () = self.drained.cancelled() => self.rx.try_recv().ok(),
                };
                match next {
                    Some(p) => self.buf.push_back(Entry::new(p)),
                    None => return,
                }
            }
            // Group commit: everything that arrived meanwhile goes in the same pipeline.
            while self.buf.len() < MAX_PIPELINE
                && let Ok(p) = self.rx.try_recv()
            {
                self.buf.push_back(Entry::new(p));
            }
            if !healthy {
                self.buf.iter_mut().for_each(Entry::ack);
            }
            match self.write().await {
                Ok(written) => {
                    if !healthy {
                        info!(waiting = self.buf.len(), "Redis answers again; usage events are written to it");
                    }
                    healthy = true;
                    wait = RETRY_MIN;
                    let n = self.stream.unflushed.fetch_add(written, Ordering::Relaxed) + written;
                    if n >= BATCH as u64 {
                        self.stream.unflushed.store(0, Ordering::Relaxed);
                        self.flush_now.notify_one();
                    }
                }
                Err(e) => {
                    if healthy {
                        warn!(error = %e, waiting = self.buf.len(), "Redis failed; usage events wait in memory until it answers");
                    }
                    healthy = false;
                    self.buf.iter_mut().for_each(Entry::ack);
                    if !self.pause(wait).await {
                        error!(lost = self.buf.len(), "shutting down with usage events Redis never took");
                        return;
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Waits `wait` while taking (and at once acknowledging) new events. False once the
    /// edge is drained and Redis has had [`DRAIN_PATIENCE`] to come back: no more waiting.
    async fn pause(&mut self, wait: Duration) -> bool {
        if self.drained.is_cancelled() {
            let give_up = *self.give_up.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_PATIENCE);
            if tokio::time::Instant::now() >= give_up {
                return false;
            }
            tokio::time::sleep(wait).await;
            return true;
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                () = self.drained.cancelled() => return true,
                p = self.rx.recv() => match p {
                    Some(p) => {
                        let mut e = Entry::new(p);
                        e.ack();
                        self.buf.push_back(e);
                    }
                    None => return true,
                },
            }
        }
    }

    /// One pipeline of XADDs from the front of the buffer. Returns how many entries are
    /// now in Redis; an error when any could not be written.
    async fn write(&mut self) -> Result<u64, String> {
        if self.ids.last.is_none() {
            let last = self.stream.last_generated_id().await.map_err(|e| e.to_string())?;
            self.ids.last = Some(last);
        }
        let now_ms = u64::try_from(crate::limit::month::unix_ms_now()).unwrap_or(0);
        let n = self.buf.len().min(MAX_PIPELINE);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for e in self.buf.iter_mut().take(n) {
            let id = match e.id {
                Some(id) => id,
                None => {
                    let id = self.ids.next(now_ms).ok_or("stream ids are not synced")?;
                    e.id = Some(id);
                    id
                }
            };
            pipe.cmd("XADD").arg(&self.stream.key).arg(id.to_string()).arg(FIELD).arg(e.payload.as_slice());
        }
        let mut conn = self.stream.conn.clone();
        let results =
            match tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<Vec<RedisResult<Value>>>(&mut conn)).await {
                Ok(Ok(r)) => r,
                outcome => {
                    self.buf.iter_mut().take(n).for_each(|e| e.uncertain = true);
                    return Err(match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    });
                }
            };
        let (mut failure, mut resync) = (None, false);
        for (e, r) in self.buf.iter_mut().zip(results) {
            match r {
                Ok(_) => e.done = true,
                // Sent before with an unknown outcome, and Redis holds it: it was written.
                Err(err) if is_stale_id(&err) && e.uncertain => e.done = true,
                // Never sent, yet the stream is past its id: another writer moved it on.
                Err(err) if is_stale_id(&err) => resync = true,
                // Refused (say, LOADING after a restart): not written this time. The id
                // stays, and so does any doubt from an earlier attempt.
                Err(err) => failure = Some(err.to_string()),
            }
        }
        if resync {
            warn!(stream = %self.stream.key, "the usage stream moved on under this edge; is another edge using the same edge id?");
            self.ids.last = None;
            for e in self.buf.iter_mut().filter(|e| !e.done && !e.uncertain) {
                e.id = None;
            }
        }
        let mut written = 0;
        self.buf.retain_mut(|e| {
            if e.done {
                e.ack();
                written += 1;
            }
            !e.done
        });
        match failure {
            Some(f) => Err(f),
            None => Ok(written),
        }
    }
}

/// XADDs an empty entry at `id` again, as a retried pipeline would.
#[cfg(test)]
pub(crate) async fn xadd_again(stream: &RedisStream, id: &str) -> RedisResult<Value> {
    let mut conn = stream.conn.clone();
    redis::cmd("XADD").arg(&stream.key).arg(id).arg(FIELD).arg("").query_async(&mut conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_clock_and_never_go_back() {
        let mut ids = IdGen::default();
        assert_eq!(ids.next(5), None, "not synced");
        ids.last = Some(Position { ms: 10, seq: 4 });
        assert_eq!(ids.next(5), Some(Position { ms: 10, seq: 5 }), "clock behind the stream");
        assert_eq!(ids.next(10), Some(Position { ms: 10, seq: 6 }));
        assert_eq!(ids.next(11), Some(Position { ms: 11, seq: 0 }));
        assert_eq!(ids.next(11), Some(Position { ms: 11, seq: 1 }));
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn ranges_decode_and_corrupt_entries_are_named() {
        let event = UsageEvent { api_id: "a".into(), status: 200, kind: "call".into(), ..UsageEvent::default() };
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("5-0"), Value::Array(vec![bulk("e"), Value::BulkString(event.encode_to_vec())])]),
            Value::Array(vec![bulk("5-1"), Value::Array(vec![bulk("e"), Value::BulkString(vec![0xff, 0xff])])]),
            Value::Array(vec![bulk("6-0"), Value::Array(vec![bulk("other"), bulk("x")])]),
        ]);
        let (events, corrupt) = decode_range(reply);
        assert_eq!(events, [UsageEvent { position: "5-0".into(), ..event }]);
        assert_eq!(corrupt, ["5-1", "6-0"]);
    }

    #[test]
    fn the_last_generated_id_is_read_from_either_protocol() {
        let resp2 = Value::Array(vec![bulk("length"), Value::Int(0), bulk("last-generated-id"), bulk("17-3")]);
        assert_eq!(last_generated_id_of(&resp2), Some(Position { ms: 17, seq: 3 }));
        let resp3 = Value::Map(vec![(bulk("last-generated-id"), bulk("9-0"))]);
        assert_eq!(last_generated_id_of(&resp3), Some(Position { ms: 9, seq: 0 }));
        assert_eq!(last_generated_id_of(&Value::Nil), None);
    }
}
