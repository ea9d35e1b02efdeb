//! The usage event of one call or execute, its position in the edge's metering stream
//! (`<ms>-<n>`, compared as a pair of numbers), and the id of a batch. Pure.
use std::{fmt, str::FromStr, time::Instant};

use souq_proto::metering::UsageEvent;

/// What was metered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A call to a deployed API through `/call`.
    Call,
    /// A one-shot `/api/v1/execute`.
    Execute,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Execute => "execute",
        }
    }
}

/// What is known of a metered request before it is answered.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The API; empty for an execute.
    pub api_id: String,
    /// The caller.
    pub user_id: String,
    /// The key used; empty for a token.
    pub key_id: String,
    /// The subscription the call counts against; empty for the owner and for executes.
    pub subscription_id: String,
    /// Call or execute.
    pub kind: Kind,
    /// Bytes of the request's body.
    pub bytes_in: u64,
    /// When the request arrived (for the latency).
    pub started: Instant,
    /// When the request arrived, ms since the epoch.
    pub ts_ms: i64,
}

impl Draft {
    /// The event of the answer: its status and body size. Its position is set by the store.
    pub fn finish(self, status: u16, bytes_out: u64) -> UsageEvent {
        UsageEvent {
            position: String::new(),
            latency_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            api_id: self.api_id,
            user_id: self.user_id,
            key_id: self.key_id,
            subscription_id: self.subscription_id,
            status: u32::from(status),
            bytes_in: self.bytes_in,
            bytes_out,
            // The agents do not report a call's CPU time yet.
            cpu_us: 0,
            ts_ms: self.ts_ms,
            kind: self.kind.as_str().to_owned(),
        }
    }
}

/// A position in a metering stream: a Redis stream id, `<ms>-<n>`. In memory mode the
/// first number is always 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Milliseconds (Redis) or 0 (memory).
    pub ms: u64,
    /// The sequence within `ms`.
    pub seq: u64,
}

impl Position {
    /// The smallest position after this one.
    pub fn successor(self) -> Position {
        match self.seq.checked_add(1) {
            Some(seq) => Position { ms: self.ms, seq },
            None => Position { ms: self.ms.saturating_add(1), seq: 0 },
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not `<ms>-<n>`.
#[derive(Debug, PartialEq, Eq)]
pub struct BadPosition;

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(BadPosition)?;
        let num = |p: &str| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(BadPosition)
            } else {
                p.parse().map_err(|_| BadPosition)
            }
        };
        Ok(Position { ms: num(ms)?, seq: num(seq)? })
    }
}

/// The id of a batch: `<source>/<last position>`. The control plane commits a batch id
/// once, so a batch sent again commits nothing new.
pub fn batch_id(source: &str, last: Position) -> String {
    format!("{source}/{last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_the_request_and_its_answer() {
        let d = Draft {
            api_id: "a".into(),
            user_id: "u".into(),
            key_id: "k".into(),
            subscription_id: "s".into(),
            kind: Kind::Call,
            bytes_in: 12,
            started: Instant::now(),
            ts_ms: 1_700_000_000_000,
        };
        let e = d.finish(201, 34);
        assert_eq!(
            (e.api_id.as_str(), e.user_id.as_str(), e.key_id.as_str(), e.subscription_id.as_str()),
            ("a", "u", "k", "s")
        );
        assert_eq!((e.status, e.bytes_in, e.bytes_out, e.cpu_us, e.ts_ms), (201, 12, 34, 0, 1_700_000_000_000));
        assert_eq!(e.kind, "call");
        assert!(e.position.is_empty());
        assert_eq!(Kind::Execute.as_str(), "execute");
    }

    #[test]
    fn positions_parse_print_and_compare_as_pairs_of_numbers() {
        let p: Position = "1700000000000-12".parse().expect("position");
        assert_eq!(p, Position { ms: 1_700_000_000_000, seq: 12 });
        assert_eq!(p.to_string(), "1700000000000-12");
        // 9 < 10 as numbers, though not as text.
        assert!("0-9".parse::<Position>().expect("p") < "0-10".parse().expect("p"));
        assert!("1-0".parse::<Position>().expect("p") > "0-99".parse().expect("p"));
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", "1--2", "+1-2"] {
            assert_eq!(bad.parse::<Position>(), Err(BadPosition), "{bad}");
        }
        assert_eq!(Position { ms: 5, seq: 7 }.successor(), Position { ms: 5, seq: 8 });
        assert_eq!(Position { ms: 5, seq: u64::MAX }.successor(), Position { ms: 6, seq: 0 });
    }

    #[test]
    fn batch_ids_name_the_source_and_last_position() {
        assert_eq!(batch_id("edge-a", Position { ms: 17, seq: 3 }), "edge-a/17-3");
        assert_eq!(batch_id("mem-0f3a", Position { ms: 0, seq: 42 }), "mem-0f3a/0-42");
    }
}
