//! The group-commit writer of the metering stream. Events of concurrent requests that
//! arrive while a write is in flight form a group; each group becomes one stream entry,
//! and the groups waiting are written in one pipelined round trip. Each request is
//! acknowledged once its group is in Redis, and only then answers its client.
//!
//! Ids are chosen here (`<ms>-<n>`, increasing; a group of `k` takes `k` sequence
//! numbers and its entry the last), so a write whose outcome is unknown (a timeout, a
//! dropped connection) is sent again with the same ids: an id Redis already holds is
//! refused as "equal or smaller", which then means "already written" — nothing is ever
//! added twice. While Redis fails, events wait here (bounded by the meter's capacity)
//! and requests are acknowledged at once.
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::{RedisError, RedisResult, Value};
use souq_proto::metering::UsageEvent;
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{
    BATCH,
    event::Position,
    redis::{FIELD, RedisStream, encode_group},
};

/// Most events in one group (one stream entry).
pub const MAX_GROUP: usize = 64;
/// Most groups in one pipelined write.
const MAX_GROUPS_PER_WRITE: usize = 32;
/// Longest one write may take before its outcome counts as unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Waits between attempts while Redis fails.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long a draining edge keeps trying to hand its last events to a failing Redis.
const DRAIN_PATIENCE: Duration = Duration::from_secs(5);

/// An event on its way to the stream.
pub struct Pending {
    /// The event.
    pub event: UsageEvent,
    /// Its share of the meter's capacity, released once it is in Redis.
    pub permit: Option<OwnedSemaphorePermit>,
    /// Told when the event is in Redis, or waits here because Redis fails.
    pub ack: Option<oneshot::Sender<()>>,
}

impl Pending {
    fn ack(&mut self) {
        if let Some(tx) = self.ack.take() {
            let _ = tx.send(());
        }
    }
}

/// Stream ids, increasing: the clock's ms while it moves on, else the next sequence.
#[derive(Debug, Default)]
struct IdGen {
    /// The last id given; `None` until synced with the stream.
    last: Option<Position>,
}

impl IdGen {
    /// Reserves `k` (at least 1) positions; returns the last of them.
    fn reserve(&mut self, now_ms: u64, k: usize) -> Option<Position> {
        let last = self.last?;
        let first = if now_ms > last.ms { Position { ms: now_ms, seq: 0 } } else { last.successor() };
        let span = u64::try_from(k.max(1) - 1).ok()?;
        let end = Position { ms: first.ms, seq: first.seq.checked_add(span)? };
        self.last = Some(end);
        Some(end)
    }
}

/// Whether Redis refused an XADD because the stream already holds that id or a later one.
fn is_stale_id(e: &RedisError) -> bool {
    e.to_string().contains("equal or smaller")
}

/// Events that go into one stream entry.
struct Group {
    members: Vec<Pending>,
    /// The encoded events, once the group is sealed.
    payload: Vec<u8>,
    /// The entry's id (its last event's position) once sealed; kept across retries.
    id: Option<Position>,
    /// A write carried it and its outcome is unknown: it may already be in Redis.
    uncertain: bool,
    /// In Redis.
    done: bool,
}

impl Group {
    fn new(p: Pending) -> Self {
        Group { members: vec![p], payload: Vec::new(), id: None, uncertain: false, done: false }
    }

    fn ack(&mut self) {
        self.members.iter_mut().for_each(Pending::ack);
    }
}

/// Where requests hand their events to the writer: a channel whose receiving end the
/// writer task takes, once.
pub struct Inbox {
    tx: mpsc::UnboundedSender<Pending>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
}

impl Default for Inbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Inbox { tx, rx: Mutex::new(Some(rx)) }
    }
}

impl Inbox {
    /// Hands an event to the writer; false when the writer is gone.
    pub fn submit(&self, p: Pending) -> bool {
        self.tx.send(p).is_ok()
    }

    /// The writer of this inbox's events into `stream`, once (the first caller gets it).
    /// `flush_now` is woken when a full batch waits; `drained` says no request will
    /// submit any more.
    pub fn writer(
        &self,
        stream: Arc<RedisStream>,
        flush_now: Arc<Notify>,
        drained: CancellationToken,
    ) -> Option<Writer> {
        let rx = self.rx.lock().ok()?.take()?;
        Some(Writer {
            stream,
            rx,
            flush_now,
            drained,
            buf: VecDeque::new(),
            ids: IdGen::default(),
            give_up: None,
            unflushed: 0,
        })
    }
}

/// The group-commit writer of one stream.
pub struct Writer {
    stream: Arc<RedisStream>,
    rx: mpsc::UnboundedReceiver<Pending>,
    flush_now: Arc<Notify>,
    drained: CancellationToken,
    buf: VecDeque<Group>,
    ids: IdGen,
    /// When a drained edge stops waiting for Redis.
    give_up: Option<tokio::time::Instant>,
    /// Events written since the flusher was last woken.
    unflushed: u64,
}

impl Writer {
    /// Adds an event to the open group, or opens one.
    fn take(&mut self, p: Pending) {
        match self.buf.back_mut() {
            Some(g) if g.id.is_none() && g.members.len() < MAX_GROUP => g.members.push(p),
            _ => self.buf.push_back(Group::new(p)),
        }
    }

    fn waiting(&self) -> usize {
        self.buf.iter().map(|g| g.members.len()).sum()
    }

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
                    Some(p) => self.take(p),
                    None => return,
                }
            }
            // Group commit: everything that arrived meanwhile goes in this write.
            while self.buf.len() <= MAX_GROUPS_PER_WRITE
                && let Ok(p) = self.rx.try_recv()
            {
                self.take(p);
            }
            if !healthy {
                self.buf.iter_mut().for_each(Group::ack);
            }
            match self.write().await {
                Ok(written) => {
                    if !healthy {
                        info!(waiting = self.waiting(), "Redis answers again; usage events are written to it");
                    }
                    healthy = true;
                    wait = RETRY_MIN;
                    self.unflushed += written;
                    if self.unflushed >= BATCH as u64 {
                        self.unflushed = 0;
                        self.flush_now.notify_one();
                    }
                }
                Err(e) => {
                    if healthy {
                        warn!(error = %e, waiting = self.waiting(), "Redis failed; usage events wait in memory until it answers");
                    }
                    healthy = false;
                    self.buf.iter_mut().for_each(Group::ack);
                    if !self.pause(wait).await {
                        error!(lost = self.waiting(), "shutting down with usage events Redis never took");
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
                    Some(mut p) => {
                        p.ack();
                        self.take(p);
                    }
                    None => return true,
                },
            }
        }
    }

    /// One pipelined write of the groups at the front. Returns how many events are now
    /// in Redis; an error when any group could not be written.
    async fn write(&mut self) -> Result<u64, String> {
        if self.ids.last.is_none() {
            let last = self.stream.last_generated_id().await.map_err(|e| e.to_string())?;
            self.ids.last = Some(last);
        }
        let now_ms = u64::try_from(crate::limit::month::unix_ms_now()).unwrap_or(0);
        let n = self.buf.len().min(MAX_GROUPS_PER_WRITE);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for g in self.buf.iter_mut().take(n) {
            let id = match g.id {
                Some(id) => id,
                None => {
                    let id = self.ids.reserve(now_ms, g.members.len()).ok_or("stream ids are not synced")?;
                    g.payload = encode_group(g.members.iter().map(|m| &m.event));
                    g.id = Some(id);
                    id
                }
            };
            pipe.cmd("XADD").arg(&self.stream.key).arg(id.to_string()).arg(FIELD).arg(g.payload.as_slice());
        }
        let mut conn = self.stream.conn.clone();
        let sent = tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<Vec<RedisResult<Value>>>(&mut conn)).await;
        let results = match sent {
            Ok(Ok(r)) => r,
            outcome => {
                self.buf.iter_mut().take(n).for_each(|g| g.uncertain = true);
                return Err(match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                });
            }
        };
        let (mut failure, mut resync) = (None, false);
        for (g, r) in self.buf.iter_mut().zip(results) {
            match r {
                Ok(_) => g.done = true,
                // Sent before with an unknown outcome, and Redis holds it: it was written.
                Err(err) if is_stale_id(&err) && g.uncertain => g.done = true,
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
            for g in self.buf.iter_mut().filter(|g| !g.done && !g.uncertain) {
                g.id = None;
            }
        }
        let mut written = 0;
        self.buf.retain_mut(|g| {
            if g.done {
                g.ack();
                written += g.members.len() as u64;
            }
            !g.done
        });
        match failure {
            Some(f) => Err(f),
            None => Ok(written),
        }
    }
}

/// XADDs an empty entry at `id` again, as a retried write would.
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
        assert_eq!(ids.reserve(5, 1), None, "not synced");
        ids.last = Some(Position { ms: 10, seq: 4 });
        assert_eq!(ids.reserve(5, 1), Some(Position { ms: 10, seq: 5 }), "clock behind the stream");
        // A group of 3 takes 6, 7 and 8; its entry is 10-8.
        assert_eq!(ids.reserve(10, 3), Some(Position { ms: 10, seq: 8 }));
        assert_eq!(ids.reserve(11, 2), Some(Position { ms: 11, seq: 1 }));
        assert_eq!(ids.reserve(11, 1), Some(Position { ms: 11, seq: 2 }));
    }
}
