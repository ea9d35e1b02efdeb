//! Reading the shims' frames: a one-line JSON header ending in `\n`, then exactly the
//! bytes the header names. Both shim modes frame this way. The reader reads in large
//! chunks, so pipelined answers cost one system call for many, and bounds what it
//! buffers: a header is at most [`MAX_HEADER`] bytes. Answers of both modes carry the
//! shim's own wall-clock times of the run ([`ShimTimes`]), which become a span.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest header line accepted, newline included.
pub const MAX_HEADER: usize = 4096;
/// Bytes asked of the socket per read.
const CHUNK: usize = 64 * 1024;

/// How far a shim's times may stray outside the agent's own bracket of the run (when it
/// sent the request, when it had the answer) before they are ignored.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// A shim's wall-clock times for one run, from its answer's `start_ns` and `end_ns`: Unix
/// epoch nanoseconds when it had read the whole request and when it was about to write
/// the answer. 0 when the shim sent none (an older image).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShimTimes {
    /// When the shim began handling the request.
    pub start_ns: u64,
    /// When the shim finished it.
    pub end_ns: u64,
}

impl ShimTimes {
    /// The times as a span's bounds, when they are plausible: both present, in order,
    /// and within [`MAX_CLOCK_SKEW`] of the agent's own `sent` .. `received`. The shim is
    /// the sandbox's, so its clock and its frames are trusted no further than that.
    pub fn bounded(self, sent: SystemTime, received: SystemTime) -> Option<(SystemTime, SystemTime)> {
        if self.start_ns == 0 || self.end_ns < self.start_ns {
            return None;
        }
        let start = UNIX_EPOCH.checked_add(Duration::from_nanos(self.start_ns))?;
        let end = UNIX_EPOCH.checked_add(Duration::from_nanos(self.end_ns))?;
        let earliest = sent.checked_sub(MAX_CLOCK_SKEW).unwrap_or(UNIX_EPOCH);
        let latest = received.checked_add(MAX_CLOCK_SKEW)?;
        (start >= earliest && end <= latest).then_some((start, end))
    }

    /// Reports the run as the shim's span `name` with `attributes`, a child of the current
    /// span (the agent's request span); nothing when the times are absent or implausible,
    /// or when the trace is not sampled.
    pub fn record(self, name: &'static str, sent: SystemTime, received: SystemTime, attributes: Vec<KeyValue>) {
        match self.bounded(sent, received) {
            Some((start, end)) => souq_proto::trace::record_shim_span(name, start, end, attributes),
            None if self.start_ns != 0 || self.end_ns != 0 => {
                tracing::debug!(
                    shim_span = name,
                    start_ns = self.start_ns,
                    end_ns = self.end_ns,
                    "shim times out of bounds; no shim span"
                );
            }
            None => {}
        }
    }
}

/// Why no frame could be read; the channel is unusable after any of them.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The shim closed the channel (it exited, or was killed).
    #[error("the shim closed the channel")]
    Closed,
    /// The socket failed.
    #[error("channel: {0}")]
    Io(#[from] std::io::Error),
    /// No newline within [`MAX_HEADER`] bytes.
    #[error("header line longer than {MAX_HEADER} bytes")]
    HeaderTooLong,
    /// The header is not the JSON expected.
    #[error("malformed header: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Buffered frame reading from one end of a channel.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames from `inner`.
    pub fn new(inner: R) -> Self {
        FrameReader { inner, buf: Vec::with_capacity(CHUNK), start: 0 }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads once more into the buffer, first moving the unread bytes to its front.
    async fn fill(&mut self) -> Result<(), FrameError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(CHUNK);
        if self.inner.read_buf(&mut self.buf).await? == 0 {
            return Err(FrameError::Closed);
        }
        Ok(())
    }

    /// The next header.
    pub async fn header<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        let mut searched = 0;
        let newline = loop {
            if let Some(i) = self.unread()[searched..].iter().position(|&b| b == b'\n') {
                break searched + i;
            }
            searched = self.unread().len();
            if searched >= MAX_HEADER {
                return Err(FrameError::HeaderTooLong);
            }
            self.fill().await?;
        };
        if newline >= MAX_HEADER {
            return Err(FrameError::HeaderTooLong);
        }
        let header = serde_json::from_slice(&self.unread()[..newline])?;
        self.start += newline + 1;
        Ok(header)
    }

    /// Reads the next `len` bytes and drops them, buffering at most a chunk at a time.
    pub async fn skip(&mut self, len: usize) -> Result<(), FrameError> {
        let mut left = len;
        loop {
            let take = self.unread().len().min(left);
            self.start += take;
            left -= take;
            if left == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// The next `len` bytes; the caller bounds `len` before asking.
    pub async fn body(&mut self, len: usize) -> Result<Vec<u8>, FrameError> {
        if self.unread().len() >= len {
            let body = self.unread()[..len].to_vec();
            self.start += len;
            return Ok(body);
        }
        // A large body is read straight into its own buffer, not through ours.
        let mut body = vec![0; len];
        let have = self.unread().len();
        body[..have].copy_from_slice(self.unread());
        self.buf.clear();
        self.start = 0;
        match self.inner.read_exact(&mut body[have..]).await {
            Ok(_) => Ok(body),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct H {
        len: usize,
    }

    #[tokio::test]
    async fn frames_split_anywhere_are_read_whole() {
        let (mut w, r) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let big = vec![b'x'; 200_000];
            let mut data = b"{\"len\":3}\nabc{\"len\":0}\n".to_vec();
            data.extend_from_slice(format!("{{\"len\":{}}}\n", big.len()).as_bytes());
            data.extend_from_slice(&big);
            w.write_all(&data).await.unwrap();
        });
        let mut fr = FrameReader::new(r);
        let h: H = fr.header().await.unwrap();
        assert_eq!(fr.body(h.len).await.unwrap(), b"abc");
        let h: H = fr.header().await.unwrap();
        assert_eq!(fr.body(h.len).await.unwrap(), b"");
        let h: H = fr.header().await.unwrap();
        assert_eq!(fr.body(h.len).await.unwrap().len(), 200_000);
        writer.await.unwrap();
        assert!(matches!(fr.header::<H>().await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn skipped_bodies_leave_the_next_frame_whole() {
        let mut data = format!("{{\"len\":{}}}\n", 300_000).into_bytes();
        data.extend(std::iter::repeat_n(b'z', 300_000));
        data.extend_from_slice(b"{\"len\":2}\nok");
        let (mut w, r) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            w.write_all(&data).await.unwrap();
        });
        let mut fr = FrameReader::new(r);
        let h: H = fr.header().await.unwrap();
        fr.skip(h.len).await.unwrap();
        assert!(fr.buf.capacity() <= 2 * CHUNK, "skipping buffers a chunk, not the body");
        let h: H = fr.header().await.unwrap();
        assert_eq!(fr.body(h.len).await.unwrap(), b"ok");
        writer.await.unwrap();
        assert!(matches!(fr.skip(1).await, Err(FrameError::Closed)));
    }

    #[test]
    fn shim_times_are_bounded_by_the_agents_clock() {
        let sent = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let received = sent + Duration::from_millis(30);
        let ns = |t: SystemTime| u64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap();
        let at = |a: SystemTime, b: SystemTime| ShimTimes { start_ns: ns(a), end_ns: ns(b) };
        let inside = at(sent + Duration::from_millis(1), received - Duration::from_millis(1));
        assert_eq!(
            inside.bounded(sent, received),
            Some((sent + Duration::from_millis(1), received - Duration::from_millis(1)))
        );
        // A shim clock a few seconds off is still believed.
        let skewed = at(sent + Duration::from_secs(5), received + Duration::from_secs(5));
        assert!(skewed.bounded(sent, received).is_some());
        let ignored = [
            ShimTimes::default(),
            ShimTimes { start_ns: 0, end_ns: ns(received) },
            at(received, sent),
            at(sent - Duration::from_secs(61), received),
            at(sent, received + Duration::from_secs(61)),
            ShimTimes { start_ns: u64::MAX - 1, end_ns: u64::MAX },
        ];
        for t in ignored {
            assert_eq!(t.bounded(sent, received), None, "{t:?}");
        }
    }

    #[tokio::test]
    async fn a_header_without_end_is_refused() {
        let data = vec![b' '; MAX_HEADER + 10];
        let mut fr = FrameReader::new(&data[..]);
        assert!(matches!(fr.header::<H>().await, Err(FrameError::HeaderTooLong)));
        let mut fr = FrameReader::new(&b"{\"len\":true}\n"[..]);
        assert!(matches!(fr.header::<H>().await, Err(FrameError::Malformed(_))));
    }
}
