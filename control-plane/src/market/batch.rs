//! Usage batches, pure: source positions, validation, the events past what is committed,
//! and their folding into hourly windows. No I/O.
use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Utc};
use souq_proto::metering::{UsageBatch, UsageEvent};
use uuid::Uuid;

use super::histogram::Histogram;
use crate::error::{Error, Result};

/// Most events in one batch.
pub const MAX_EVENTS: usize = 10_000;
/// Longest source name, in characters.
pub const MAX_SOURCE: usize = 128;
/// Longest batch id, in bytes (a source and a position).
pub const MAX_BATCH_ID: usize = 200;
/// The kinds of event.
pub const KINDS: [&str; 2] = ["call", "execute"];
const HOUR_MS: i64 = 3_600_000;

/// A position in a source: a Redis stream id `<ms>-<n>`, ordered as a pair of numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    ms: u64,
    seq: u64,
}

impl FromStr for Position {
    type Err = ();

    /// `<ms>-<n>`, both decimal u64 without sign.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let number = |d: &str| {
            if d.is_empty() || d.len() > 20 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            d.parse::<u64>().map_err(|_| ())
        };
        Ok(Position { ms: number(ms)?, seq: number(seq)? })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Reads a stored `committed_through`: '' means nothing is committed.
pub fn committed(stored: &str) -> Result<Option<Position>> {
    if stored.is_empty() {
        return Ok(None);
    }
    stored.parse().map(Some).map_err(|()| Error::Internal(format!("stored usage position {stored:?} is malformed")))
}

/// Where a window's counts go: the hour and who called what, how. Absent ids are ''.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowKey {
    /// The hour's start.
    pub start: DateTime<Utc>,
    /// The API called; '' for an execute.
    pub api_id: String,
    /// The caller.
    pub user_id: String,
    /// The key the caller used; '' for a token.
    pub key_id: String,
    /// The subscription the call counts against; '' for the owner's own calls.
    pub subscription_id: String,
    /// `call` or `execute`.
    pub kind: String,
}

/// What a window counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls made.
    pub calls: u64,
    /// Answers of status 500 and above.
    pub errors: u64,
    /// Request bytes.
    pub bytes_in: u64,
    /// Response bytes.
    pub bytes_out: u64,
    /// Sandbox CPU time, where known.
    pub cpu_us: u64,
    /// The calls' latencies.
    pub latency: Histogram,
}

/// One checked event of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its position in its source.
    pub position: Position,
    /// The window it counts in.
    pub key: WindowKey,
    /// HTTP status of the answer.
    pub status: u32,
    /// How long the call took.
    pub latency_us: u64,
    /// Request bytes.
    pub bytes_in: u64,
    /// Response bytes.
    pub bytes_out: u64,
    /// Sandbox CPU time, where known.
    pub cpu_us: u64,
}

/// A checked batch: its source, its id, its events in position order.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The edge's metering stream.
    pub source: String,
    /// `<source>/<last position>`.
    pub batch_id: String,
    /// The events, positions strictly increasing.
    pub events: Vec<Event>,
}

/// An id field: '' or a UUID, returned in canonical (lower-case, hyphenated) form so
/// that it matches the ids the access table hands out.
fn id(i: usize, field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    value
        .parse::<Uuid>()
        .map(|u| u.to_string())
        .map_err(|_| Error::invalid(&format!("events[{i}].{field}"), "empty or a UUID"))
}

fn event(i: usize, e: &UsageEvent) -> Result<Event> {
    let field = |f: &str| format!("events[{i}].{f}");
    let position = e.position.parse().map_err(|()| Error::invalid(&field("position"), "<ms>-<n>, two decimal numbers"))?;
    let api_id = id(i, "api_id", &e.api_id)?;
    // An empty kind is read from the event's shape: executes name no API.
    let kind = match e.kind.as_str() {
        "" if api_id.is_empty() => "execute",
        "" => "call",
        k => KINDS.into_iter().find(|&x| x == k).ok_or_else(|| Error::invalid(&field("kind"), "call or execute"))?,
    };
    let at = (e.ts_ms >= 0).then(|| DateTime::from_timestamp_millis(e.ts_ms.div_euclid(HOUR_MS) * HOUR_MS)).flatten();
    let start = at.ok_or_else(|| Error::invalid(&field("ts_ms"), "milliseconds since the epoch"))?;
    Ok(Event {
        position,
        key: WindowKey {
            start,
            api_id,
            user_id: id(i, "user_id", &e.user_id)?,
            key_id: id(i, "key_id", &e.key_id)?,
            subscription_id: id(i, "subscription_id", &e.subscription_id)?,
            kind: kind.to_owned(),
        },
        status: e.status,
        latency_us: e.latency_us,
        bytes_in: e.bytes_in,
        bytes_out: e.bytes_out,
        cpu_us: e.cpu_us,
    })
}

/// Checks a batch: a source of 1 to [`MAX_SOURCE`] characters, at most [`MAX_EVENTS`]
/// events with strictly increasing positions, and the id `<source>/<last position>` (an
/// empty batch, which only asks how far the source is committed, may carry any short id).
pub fn check(batch: &UsageBatch) -> Result<Checked> {
    let source = &batch.source;
    if source.is_empty() || source.chars().count() > MAX_SOURCE || source.chars().any(char::is_control) {
        return Err(Error::invalid("source", format!("1 to {MAX_SOURCE} characters, no control characters")));
    }
    if batch.events.len() > MAX_EVENTS {
        return Err(Error::invalid("events", format!("at most {MAX_EVENTS} events per batch")));
    }
    if batch.batch_id.len() > MAX_BATCH_ID {
        return Err(Error::invalid("batch_id", "<source>/<last position>"));
    }
    let mut events = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        let e = event(i, e)?;
        if events.last().is_some_and(|prev: &Event| prev.position >= e.position) {
            return Err(Error::invalid(&format!("events[{i}].position"), "positions must increase strictly within a batch"));
        }
        events.push(e);
    }
    if let Some(last) = batch.events.last()
        && batch.batch_id != format!("{source}/{}", last.position)
    {
        return Err(Error::invalid("batch_id", "must be <source>/<last position>"));
    }
    Ok(Checked { source: source.clone(), batch_id: batch.batch_id.clone(), events })
}

/// The events past `through`: with positions strictly increasing, a suffix of the batch.
pub fn fresh(events: &[Event], through: Option<Position>) -> &[Event] {
    match through {
        None => events,
        Some(t) => &events[events.partition_point(|e| e.position <= t)..],
    }
}

/// Sums events into their hourly windows, in key order (the order rows are locked in).
pub fn fold(events: &[Event]) -> BTreeMap<WindowKey, Tally> {
    let mut windows: BTreeMap<WindowKey, Tally> = BTreeMap::new();
    for e in events {
        let t = windows.entry(e.key.clone()).or_default();
        t.calls = t.calls.saturating_add(1);
        t.errors = t.errors.saturating_add(u64::from(e.status >= 500));
        t.bytes_in = t.bytes_in.saturating_add(e.bytes_in);
        t.bytes_out = t.bytes_out.saturating_add(e.bytes_out);
        t.cpu_us = t.cpu_us.saturating_add(e.cpu_us);
        t.latency.record(e.latency_us);
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "0190b5d2-7d1e-7c3a-9a53-3f0e0b9d2a11";
    const USER: &str = "0190B5D2-7D1E-7C3A-9A53-3F0E0B9D2A22";

    fn ev(position: &str, ts_ms: i64, status: u32) -> UsageEvent {
        UsageEvent {
            position: position.into(),
            api_id: API.into(),
            user_id: USER.into(),
            status,
            latency_us: 1_200,
            bytes_in: 10,
            bytes_out: 100,
            ts_ms,
            kind: "call".into(),
            ..UsageEvent::default()
        }
    }

    fn batch(events: Vec<UsageEvent>) -> UsageBatch {
        let batch_id = format!("edge-1/{}", events.last().map(|e| e.position.clone()).unwrap_or_default());
        UsageBatch { source: "edge-1".into(), batch_id, events }
    }

    fn field(r: Result<Checked>) -> String {
        match r {
            Err(Error::Wire(w)) => w.field.unwrap_or_default(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn positions_parse_and_compare_as_number_pairs() {
        let p = |s: &str| s.parse::<Position>().unwrap();
        assert!(p("9-5") < p("10-0"), "not as strings");
        assert!(p("10-2") < p("10-10"));
        assert_eq!(p("1700000000000-3").to_string(), "1700000000000-3");
        assert_eq!(p("18446744073709551615-18446744073709551615"), Position { ms: u64::MAX, seq: u64::MAX });
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", "+1-2", "1 -2", "18446744073709551616-0"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
        assert_eq!(committed("").unwrap(), None);
        assert_eq!(committed("5-1").unwrap(), Some(p("5-1")));
        assert!(committed("junk").is_err());
    }

    #[test]
    fn batches_are_checked() {
        let ok = check(&batch(vec![ev("1-0", 0, 200), ev("1-1", 0, 200), ev("2-0", 0, 200)])).unwrap();
        assert_eq!(ok.events.len(), 3);
        assert_eq!(ok.events[0].key.user_id, USER.to_lowercase(), "ids are canonical");
        let mut b = batch(vec![ev("1-0", 0, 200), ev("1-0", 0, 200)]);
        assert_eq!(field(check(&b)), "events[1].position");
        b = batch(vec![ev("2-0", 0, 200), ev("10-0", 0, 200)]);
        assert!(check(&b).is_ok(), "10-0 follows 2-0");
        b.batch_id = "edge-1/2-0".into();
        assert_eq!(field(check(&b)), "batch_id");
        b = batch(vec![ev("1-0", -1, 200)]);
        assert_eq!(field(check(&b)), "events[0].ts_ms");
        b = batch(vec![ev("1-0", 0, 200)]);
        b.events[0].key_id = "k".into();
        assert_eq!(field(check(&b)), "events[0].key_id");
        b.events[0].key_id = String::new();
        b.events[0].kind = "stream".into();
        assert_eq!(field(check(&b)), "events[0].kind");
        b.events[0].kind = String::new();
        assert_eq!(check(&b).unwrap().events[0].key.kind, "call");
        b.source = "x".repeat(129);
        assert_eq!(field(check(&b)), "source");
        let many: Vec<UsageEvent> = (0..=MAX_EVENTS).map(|i| ev(&format!("1-{i}"), 0, 200)).collect();
        assert_eq!(field(check(&batch(many))), "events");
        let empty = UsageBatch { source: "edge-1".into(), batch_id: String::new(), events: vec![] };
        assert!(check(&empty).unwrap().events.is_empty());
    }

    #[test]
    fn only_events_past_the_committed_position_are_fresh() {
        let c = check(&batch(vec![ev("1-0", 0, 200), ev("1-1", 0, 200), ev("3-0", 0, 200)])).unwrap();
        let positions = |through: Option<&str>| {
            fresh(&c.events, through.map(|t| t.parse().unwrap())).iter().map(|e| e.position.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(positions(None), ["1-0", "1-1", "3-0"]);
        assert_eq!(positions(Some("1-0")), ["1-1", "3-0"]);
        assert_eq!(positions(Some("2-9")), ["3-0"]);
        assert!(positions(Some("3-0")).is_empty(), "a batch sent again commits nothing");
        assert!(positions(Some("99-0")).is_empty());
    }

    #[test]
    fn events_fold_into_hourly_windows() {
        let hour = 3_600_000;
        let mut slow = ev("1-2", 2 * hour - 1, 503);
        slow.latency_us = 700_000;
        let mut other_user = ev("1-3", hour, 200);
        other_user.user_id = String::new();
        let c = check(&batch(vec![ev("1-0", hour, 200), ev("1-1", hour + 59 * 60_000, 200), slow, other_user, ev("1-4", 2 * hour, 200)]))
            .unwrap();
        let windows = fold(&c.events);
        assert_eq!(windows.len(), 3);
        let (first_key, first) = windows.iter().find(|(k, _)| !k.user_id.is_empty()).unwrap();
        assert_eq!(first_key.start, DateTime::from_timestamp_millis(hour).unwrap());
        assert_eq!((first.calls, first.errors, first.bytes_in, first.bytes_out), (3, 1, 30, 300));
        assert_eq!(first.latency.count(), 3);
        assert_eq!(first.latency.percentile_ms(95), 1_000.0);
        assert_eq!(windows.values().map(|t| t.calls).sum::<u64>(), 5);
    }
}
