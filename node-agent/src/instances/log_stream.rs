//! The Logs RPC's stream: the last lines of each instance asked for, oldest first, then,
//! when following, every new line until the caller goes away, the instances are gone, or
//! the agent shuts down. A follower too slow to keep up is told how many lines it missed.
use std::sync::Arc;

use souq_proto::agent::LogLine;
use tokio::sync::mpsc;
use tokio_stream::{
    StreamExt, StreamMap,
    wrappers::{BroadcastStream, ReceiverStream, errors::BroadcastStreamRecvError},
};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::log_buffer::{self, LogBuffer};

/// Most instances in one Logs request.
pub const MAX_INSTANCE_IDS: usize = 256;
/// Lines queued for the caller before the stream waits for it.
const QUEUE: usize = 256;

/// The stream of `sources`' logs: `tail` lines each, then, if `follow`, new ones.
pub fn stream(
    sources: Vec<(String, Arc<LogBuffer>)>,
    tail: usize,
    follow: bool,
    shutdown: CancellationToken,
) -> ReceiverStream<Result<LogLine, Status>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    // Every tail is taken with its subscription, so no line falls between the two.
    let mut tails = Vec::with_capacity(sources.len());
    let mut followers = StreamMap::new();
    for (id, log) in sources {
        let (lines, new_lines) = log.tail_and_follow(tail.min(log_buffer::MAX_LINES));
        if follow {
            followers.insert(id.clone(), BroadcastStream::new(new_lines));
        }
        tails.push((id, lines));
    }
    tokio::spawn(async move {
        for (id, lines) in tails {
            for line in lines {
                if !send(&tx, line.to_proto(&id), &shutdown).await {
                    return;
                }
            }
        }
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                next = followers.next() => next,
            };
            // None: every instance followed is gone.
            let Some((id, item)) = next else { return };
            let line = match item {
                Ok(line) => line.to_proto(&id),
                Err(BroadcastStreamRecvError::Lagged(n)) => log_buffer::Line {
                    stream: log_buffer::SOUQ,
                    text: format!("{n} lines skipped: this follower fell behind"),
                    ts_ms: 0,
                }
                .to_proto(&id),
            };
            if !send(&tx, line, &shutdown).await {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Sends one line; false when the caller is gone or the agent is shutting down.
async fn send(tx: &mpsc::Sender<Result<LogLine, Status>>, line: LogLine, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        sent = tx.send(Ok(line)) => sent.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tails_then_follows_then_ends_with_the_instances() {
        let a = Arc::new(LogBuffer::default());
        let b = Arc::new(LogBuffer::default());
        for i in 0..5 {
            a.push(log_buffer::STDOUT, &format!("a{i}"));
        }
        b.note("b0");
        let sources = vec![("a".to_owned(), a.clone()), ("b".to_owned(), b.clone())];
        let mut s = stream(sources, 2, true, CancellationToken::new());
        let mut got = Vec::new();
        for _ in 0..3 {
            let l = s.next().await.unwrap().unwrap();
            got.push((l.instance_id, l.line));
        }
        let want = [("a", "a3"), ("a", "a4"), ("b", "b0")].map(|(i, l)| (i.to_owned(), l.to_owned()));
        assert_eq!(got, want, "the last two lines of each, oldest first");
        b.push(log_buffer::STDERR, "b1");
        let l = s.next().await.unwrap().unwrap();
        assert_eq!((l.instance_id.as_str(), l.stream.as_str(), l.line.as_str()), ("b", "stderr", "b1"));
        drop((a, b));
        assert!(s.next().await.is_none(), "the stream ends when the instances are gone");
    }

    #[tokio::test]
    async fn without_follow_only_the_tail_is_sent() {
        let a = Arc::new(LogBuffer::default());
        a.push(log_buffer::STDOUT, "x");
        let s = stream(vec![("a".to_owned(), a.clone())], 100, false, CancellationToken::new());
        let lines: Vec<_> = s.collect().await;
        assert_eq!(lines.len(), 1);
    }
}
