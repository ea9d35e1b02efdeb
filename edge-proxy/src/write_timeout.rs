//! A write timeout for slow readers: a connection whose client accepts no bytes for
//! the limit is closed. Two watches, since HTTP/2 stalls without a pending write:
//! [`WriteTimeout`] fails a socket write that waits that long, and [`Stalls`] sees a
//! response body whose last frame the connection has not come back for (an HTTP/2
//! stream whose flow-control window the client never reopens). A response with nothing
//! to send yet (a quiet log follow) is polled and waits on its own source, so neither
//! counts it.
use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// `inner`, whose writes (and flushes and shutdown) fail with `TimedOut` once one has
/// waited `limit` on the client.
pub struct WriteTimeout<T> {
    inner: T,
    limit: Duration,
    /// Running while a write waits; cleared by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeout<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, limit: Duration) -> Self {
        WriteTimeout { inner, limit, stalled: None }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Passes `polled` on, starting the clock when it waits and stopping it on progress.
    fn watch<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client read nothing within the write timeout")))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

/// The response bodies of one connection whose last frame waits for the connection to
/// take it further, each with the moment it started waiting.
#[derive(Debug, Default)]
pub struct Stalls {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Instant>>,
}

impl Stalls {
    /// Whether some body has waited longer than `limit`.
    pub fn any_longer_than(&self, limit: Duration) -> bool {
        let waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        waiting.values().any(|since| since.elapsed() > limit)
    }

    fn set(&self, id: u64, waiting: bool) {
        let mut all = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if waiting {
            all.insert(id, Instant::now());
        } else {
            all.remove(&id);
        }
    }

    /// `body`, watched: from each frame it yields until the connection polls it again.
    pub fn watch<B>(self: &Arc<Self>, body: B) -> Watched<B> {
        Watched { inner: body, id: self.next.fetch_add(1, Ordering::Relaxed), stalls: self.clone() }
    }
}

/// A response body that [`Stalls`] watches.
pub struct Watched<B> {
    inner: B,
    id: u64,
    stalls: Arc<Stalls>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.stalls.set(self.id, false);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(Some(Ok(_)))) {
            self.stalls.set(self.id, true);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        self.stalls.set(self.id, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_reader_holds_up_fails_after_the_limit_and_progress_resets_it() {
        let limit = Duration::from_millis(400);
        let (near, mut far) = tokio::io::duplex(16);
        let mut w = WriteTimeout::new(near, limit);
        w.write_all(&[1; 16]).await.expect("fits the buffer");
        // The reader takes 16 bytes after 300 ms, three times: each time in time, since
        // progress starts the clock again.
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                far.read_exact(&mut buf).await.expect("read");
            }
            far
        });
        for _ in 0..3 {
            w.write_all(&[2; 16]).await.expect("the reader made room in time");
        }
        let _far = reader.await.expect("reader");
        let started = tokio::time::Instant::now();
        let stalled = tokio::time::timeout(Duration::from_secs(10), w.write_all(&[3; 1])).await;
        let e = stalled.expect("cut within the bound").expect_err("nobody reads any more");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= limit);
    }
}
