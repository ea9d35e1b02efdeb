//! The durable metering stream: a Redis stream `souq:usage:<edge id>` per edge.
//!
//! One stream entry holds the events of one group commit ([`super::writer`]): its field
//! `ev` is the events, protobuf-encoded and length-delimited, and the `k` events of an
//! entry with id `<ms>-<n>` have the positions `<ms>-<n-k+1>` … `<ms>-<n>`. An entry's
//! id is thus its last event's position: trimming through a committed position removes
//! exactly the entries whose every event is committed.
use prost::Message;
use redis::{RedisResult, Value, aio::ConnectionManager};
use souq_proto::metering::UsageEvent;

use super::event::Position;

/// The stream entry's one field.
pub const FIELD: &str = "ev";
/// Entries one read fetches; with at most [`super::writer::MAX_GROUP`] events each.
const ENTRIES_PER_READ: usize = 32;

/// The stream key of an edge.
pub fn stream_key(edge_id: &str) -> String {
    format!("souq:usage:{edge_id}")
}

/// The events of one group, as a stream entry's field.
pub fn encode_group<'a>(events: impl Iterator<Item = &'a UsageEvent>) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in events {
        // Writing into a Vec cannot run out of room.
        let _ = e.encode_length_delimited(&mut buf);
    }
    buf
}

/// The events of an entry with id `id`, with their positions; `None` when it does not
/// decode or its events do not fit below its id.
fn decode_group(id: Position, mut payload: &[u8]) -> Option<Vec<UsageEvent>> {
    let mut events = Vec::new();
    while !payload.is_empty() {
        events.push(UsageEvent::decode_length_delimited(&mut payload).ok()?);
    }
    let k = u64::try_from(events.len()).ok()?;
    let first = id.seq.checked_sub(k.checked_sub(1)?)?;
    for (i, e) in (first..).zip(events.iter_mut()) {
        e.position = Position { ms: id.ms, seq: i }.to_string();
    }
    Some(events)
}

/// What one read of the stream found.
#[derive(Debug, Default, PartialEq)]
pub struct Read {
    /// Events in position order: whole entries, at most the cap asked for (or one entry).
    pub events: Vec<UsageEvent>,
    /// Ids of entries that do not decode: deleted, never sent.
    pub corrupt: Vec<String>,
    /// Whether more entries may wait after these.
    pub more: bool,
}

/// One edge's stream: where the writer appends, and what the flusher reads and trims.
pub struct RedisStream {
    pub(super) key: String,
    pub(super) conn: ConnectionManager,
}

impl RedisStream {
    /// The stream of `edge_id` on `conn`.
    pub fn new(conn: ConnectionManager, edge_id: &str) -> Self {
        RedisStream { key: stream_key(edge_id), conn }
    }

    /// The oldest events, whole entries, at most `cap` of them (or one entry's worth).
    pub async fn read(&self, cap: usize) -> RedisResult<Read> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(ENTRIES_PER_READ)
            .query_async(&mut conn)
            .await?;
        Ok(decode_range(reply, cap))
    }

    /// Deletes every entry whose events are all at or before `through`.
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

    /// How many entries (group commits) the stream holds.
    pub async fn len(&self) -> RedisResult<u64> {
        let mut conn = self.conn.clone();
        redis::cmd("XLEN").arg(&self.key).query_async(&mut conn).await
    }

    /// The stream's last id ever given (it survives deletions); 0-0 when there is no stream.
    pub(super) async fn last_generated_id(&self) -> RedisResult<Position> {
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

/// The events of an XRANGE answer (whole entries, at most `cap` events unless the first
/// entry alone has more), and the ids of entries that do not decode.
fn decode_range(reply: Value, cap: usize) -> Read {
    let mut read = Read::default();
    let Value::Array(entries) = reply else {
        return read;
    };
    read.more = entries.len() >= ENTRIES_PER_READ;
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let Some(id) = parts.first().and_then(text) else {
            continue;
        };
        let payload = match parts.get(1) {
            Some(Value::Array(fields)) => fields
                .chunks_exact(2)
                .find(|p| text(&p[0]).as_deref() == Some(FIELD))
                .and_then(|p| if let Value::BulkString(b) = &p[1] { Some(b.as_slice()) } else { None }),
            _ => None,
        };
        let events = id.parse().ok().zip(payload).and_then(|(pos, payload)| decode_group(pos, payload));
        match events {
            Some(events) if !read.events.is_empty() && read.events.len() + events.len() > cap => {
                read.more = true;
                break;
            }
            Some(mut events) => read.events.append(&mut events),
            None => read.corrupt.push(id),
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn event(api: &str) -> UsageEvent {
        UsageEvent { api_id: api.into(), status: 200, kind: "call".into(), ..UsageEvent::default() }
    }

    fn entry(id: &str, field: &str, payload: Vec<u8>) -> Value {
        Value::Array(vec![bulk(id), Value::Array(vec![bulk(field), Value::BulkString(payload)])])
    }

    #[test]
    fn an_entry_holds_a_group_and_its_id_is_the_last_position() {
        let group = [event("a"), event("b"), event("c")];
        let reply = Value::Array(vec![
            entry("5-2", FIELD, encode_group(group.iter())),
            entry("5-3", FIELD, vec![0xff, 0xff]),
            entry("6-0", "other", b"x".to_vec()),
            // Three events cannot end at sequence 1.
            entry("7-1", FIELD, encode_group(group.iter())),
            entry("8-0", FIELD, encode_group(group[..1].iter())),
        ]);
        let read = decode_range(reply, 100);
        let got: Vec<(&str, &str)> = read.events.iter().map(|e| (e.position.as_str(), e.api_id.as_str())).collect();
        assert_eq!(got, [("5-0", "a"), ("5-1", "b"), ("5-2", "c"), ("8-0", "a")]);
        assert_eq!(read.corrupt, ["5-3", "6-0", "7-1"]);
        assert!(!read.more);
    }

    #[test]
    fn reads_stop_at_the_cap_on_an_entry_boundary() {
        let group = [event("a"), event("b")];
        let reply = || {
            Value::Array(vec![
                entry("1-1", FIELD, encode_group(group.iter())),
                entry("1-3", FIELD, encode_group(group.iter())),
                entry("1-5", FIELD, encode_group(group.iter())),
            ])
        };
        let read = decode_range(reply(), 5);
        assert_eq!((read.events.len(), read.more), (4, true));
        // The first entry is read whatever its size, so a read always makes progress.
        let read = decode_range(reply(), 1);
        assert_eq!((read.events.len(), read.more), (2, true));
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
