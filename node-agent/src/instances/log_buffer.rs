//! Instance logs: per instance, a bounded ring of its recent stdout and stderr lines and
//! the agent's own notes (stream `souq`), kept across restarts of the instance, and a
//! broadcast of new lines for followers. Pure; the container's output is fed in by the
//! launcher, chunk by chunk, through a [`LineSplitter`].
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use souq_proto::agent::LogLine;
use tokio::sync::broadcast;

/// Most lines kept per instance.
pub const MAX_LINES: usize = 1000;
/// Most bytes of line text kept per instance.
pub const MAX_BYTES: usize = 256 * 1024;
/// Longest line kept; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 4 * 1024;
/// New lines a slow follower may fall behind by before it skips some.
const FOLLOW_BACKLOG: usize = 1024;

/// The handler's standard output.
pub const STDOUT: &str = "stdout";
/// The handler's standard error.
pub const STDERR: &str = "stderr";
/// The agent's notes: starts, load failures, crashes, restarts.
pub const SOUQ: &str = "souq";

/// One line of an instance's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// [`STDOUT`], [`STDERR`] or [`SOUQ`].
    pub stream: &'static str,
    /// The text, without its newline, at most [`MAX_LINE`] bytes.
    pub text: String,
    /// When the agent got it, in ms since the epoch.
    pub ts_ms: i64,
}

impl Line {
    /// The line on the wire, for `instance_id`.
    pub fn to_proto(&self, instance_id: &str) -> LogLine {
        LogLine { instance_id: instance_id.to_owned(), stream: self.stream.to_owned(), line: self.text.clone(), ts_ms: self.ts_ms }
    }
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<Arc<Line>>,
    bytes: usize,
}

/// The log of one instance.
#[derive(Debug)]
pub struct LogBuffer {
    ring: Mutex<Ring>,
    followers: broadcast::Sender<Arc<Line>>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer { ring: Mutex::default(), followers: broadcast::channel(FOLLOW_BACKLOG).0 }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl LogBuffer {
    /// Appends one line (without its newline) of `stream`, evicting the oldest lines past
    /// the bounds, and sends it to followers.
    pub fn push(&self, stream: &'static str, text: &str) {
        let line = Arc::new(Line { stream, text: cut(text, MAX_LINE).to_owned(), ts_ms: now_ms() });
        let Ok(mut ring) = self.ring.lock() else { return };
        ring.bytes += line.text.len();
        ring.lines.push_back(line.clone());
        while ring.lines.len() > MAX_LINES || ring.bytes > MAX_BYTES {
            let Some(old) = ring.lines.pop_front() else { break };
            ring.bytes -= old.text.len();
        }
        // Sent under the lock, so a follower that took its tail under the same lock sees
        // every line exactly once. No follower is not an error.
        let _ = self.followers.send(line);
    }

    /// Appends the agent's note `text` (each of its lines) on the `souq` stream.
    pub fn note(&self, text: &str) {
        for line in text.lines() {
            self.push(SOUQ, line);
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<Arc<Line>> {
        self.tail_and_follow(n).0
    }

    /// The last `n` lines, oldest first, and a receiver of every line pushed after them.
    pub fn tail_and_follow(&self, n: usize) -> (Vec<Arc<Line>>, broadcast::Receiver<Arc<Line>>) {
        match self.ring.lock() {
            Ok(ring) => {
                let skip = ring.lines.len().saturating_sub(n);
                (ring.lines.iter().skip(skip).cloned().collect(), self.followers.subscribe())
            }
            Err(_) => (Vec::new(), self.followers.subscribe()),
        }
    }
}

/// Cuts a stream's output, which comes in chunks that need not end on a line, into lines
/// of at most [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// Dropping the rest of a line that was too long.
    skipping: bool,
}

impl LineSplitter {
    /// Feeds a chunk; `emit` gets every line it completes.
    pub fn feed(&mut self, mut chunk: &[u8], mut emit: impl FnMut(&str)) {
        while !chunk.is_empty() {
            let (piece, rest, ended) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &chunk[chunk.len()..], false),
            };
            chunk = rest;
            if self.skipping {
                // The rest of a line already cut.
                self.skipping = !ended;
                continue;
            }
            let room = MAX_LINE.saturating_sub(self.partial.len());
            self.partial.extend_from_slice(&piece[..piece.len().min(room)]);
            let too_long = piece.len() > room;
            if ended || too_long {
                let line = String::from_utf8_lossy(&self.partial);
                emit(cut(line.trim_end_matches('\r'), MAX_LINE));
                self.partial.clear();
                self.skipping = too_long && !ended;
            }
        }
    }

    /// Emits what is left of an unfinished line (the stream ended).
    pub fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            emit(&String::from_utf8_lossy(&self.partial));
        }
        self.partial.clear();
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bounds() {
        let log = LogBuffer::default();
        for i in 0..MAX_LINES + 10 {
            log.push(STDOUT, &format!("line {i}"));
        }
        let all = log.tail(usize::MAX);
        assert_eq!(all.len(), MAX_LINES);
        assert_eq!(all[0].text, "line 10", "the oldest went first");
        assert_eq!(log.tail(2).iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["line 1008", "line 1009"]);

        // Bytes bound: 100 lines of 4 KiB are 400 KiB, over 256 KiB.
        let log = LogBuffer::default();
        for i in 0..100 {
            log.push(STDERR, &format!("{i:04}{}", "x".repeat(2 * MAX_LINE)));
        }
        let kept = log.tail(usize::MAX);
        assert!(kept.iter().all(|l| l.text.len() == MAX_LINE), "lines are cut at 4 KiB");
        assert_eq!(kept.len(), MAX_BYTES / MAX_LINE);
        assert!(kept.last().unwrap().text.starts_with("0099"));
    }

    #[tokio::test]
    async fn followers_get_each_new_line_once_after_their_tail() {
        let log = LogBuffer::default();
        log.push(STDOUT, "old");
        log.note("started\nsecond note line");
        let (tail, mut rx) = log.tail_and_follow(2);
        assert_eq!(tail.iter().map(|l| (l.stream, l.text.as_str())).collect::<Vec<_>>(), [
            (SOUQ, "started"),
            (SOUQ, "second note line")
        ]);
        log.push(STDERR, "new");
        assert_eq!(rx.recv().await.unwrap().text, "new");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn chunks_become_lines_and_long_lines_are_cut() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"hel", |l| out.push(l.to_owned()));
        s.feed(b"lo\r\nwor", |l| out.push(l.to_owned()));
        s.feed(b"ld\n\n", |l| out.push(l.to_owned()));
        assert_eq!(out, ["hello", "world", ""]);
        out.clear();
        let long = "é".repeat(MAX_LINE); // 2 bytes each
        s.feed(long.as_bytes(), |l| out.push(l.to_owned()));
        s.feed(b"tail of the long line\nnext\nunfinished", |l| out.push(l.to_owned()));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE);
        assert!(out[0].chars().all(|c| c == 'é'));
        assert_eq!(out[1], "next");
        s.finish(|l| out.push(l.to_owned()));
        assert_eq!(out[2], "unfinished");
    }
}
