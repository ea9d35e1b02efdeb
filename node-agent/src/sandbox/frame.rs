//! Reading the shims' frames: a one-line JSON header ending in `\n`, then exactly the
//! bytes the header names. Both shim modes frame this way. The reader reads in large
//! chunks, so pipelined answers cost one system call for many, and bounds what it
//! buffers: a header is at most [`MAX_HEADER`] bytes.
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest header line accepted, newline included.
pub const MAX_HEADER: usize = 4096;
/// Bytes asked of the socket per read.
const CHUNK: usize = 64 * 1024;

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

    #[tokio::test]
    async fn a_header_without_end_is_refused() {
        let data = vec![b' '; MAX_HEADER + 10];
        let mut fr = FrameReader::new(&data[..]);
        assert!(matches!(fr.header::<H>().await, Err(FrameError::HeaderTooLong)));
        let mut fr = FrameReader::new(&b"{\"len\":true}\n"[..]);
        assert!(matches!(fr.header::<H>().await, Err(FrameError::Malformed(_))));
    }
}
