//! Fakes of Souq's gRPC peers for unit tests and benches: a fake agent ([`FakeAgent`]),
//! and the control plane's `Routes` ([`FakeRoutes`]) and `Metering` ([`FakeMetering`]).
//! Each is served for real on `127.0.0.1:0` ([`serve`]), so the code under test talks
//! gRPC to it as it would to the real peer. Never a dependency of a release binary.
#![forbid(unsafe_code)]

pub mod agent;
pub mod feed;
pub mod metering;
pub mod routes;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::watch,
    task::JoinHandle,
};
use tokio_stream::StreamExt;
use tonic::transport::server::{Connected, TcpConnectInfo};

pub use agent::{Behaviour, FakeAgent};
pub use feed::Feed;
pub use metering::FakeMetering;
pub use routes::FakeRoutes;

/// A fake served on a loopback port. It runs until [`Served::stop`] or until the test's
/// runtime ends; dropping the handle leaves it running, so a test may keep only the URL.
#[derive(Debug)]
pub struct Served {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Served {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL, `http://127.0.0.1:<port>`, as a gRPC client takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Goes away as a crashed peer does: the port closes, every open connection is cut
    /// (open streams break, whatever they were doing), and this returns once the server
    /// is gone.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Resolves once `stop` says so; never when its sender is dropped without a stop (a
/// dropped [`Served`] is no stop).
async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|stopped| *stopped).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A served connection, cut at once when the server stops: graceful shutdown alone
/// would wait for open streams (a table stream never ends on its own).
struct Cuttable {
    io: TcpStream,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    cut: bool,
}

impl Cuttable {
    /// Whether the server stopped; registers for the wake-up while it has not.
    fn is_cut(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.cut && self.stop.as_mut().poll(cx).is_ready() {
            self.cut = true;
        }
        self.cut
    }
}

fn cut_off() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "the fake stopped")
}

impl AsyncRead for Cuttable {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(cut_off()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_cut(cx) {
            return Poll::Ready(Err(cut_off()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for Cuttable {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

/// Serves `services` on `127.0.0.1:0`. Binding happens before this returns, so the URL
/// takes connections at once.
///
/// # Panics
/// When no loopback port can be bound: a test cannot go on without it.
pub async fn serve(services: tonic::service::Routes) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    let (stop, stopping) = watch::channel(false);
    let on_stop = stopping.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
        .map(move |conn| conn.map(|io| Cuttable { io, stop: Box::pin(stopped(on_stop.clone())), cut: false }));
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(services)
            .serve_with_incoming_shutdown(incoming, stopped(stopping)),
    );
    Served { addr, stop, task }
}

/// Whether `req` carries `expected` as its bearer; always true when nothing is expected.
fn bearer_ok<T>(req: &tonic::Request<T>, expected: Option<&str>) -> bool {
    expected.is_none_or(|t| souq_proto::bearer_is(req.metadata(), t))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use souq_proto::routes::{RouteTable, WatchRoutesRequest, routes_client::RoutesClient};

    use super::*;

    #[tokio::test]
    async fn stopping_cuts_an_open_stream_and_closes_the_port() {
        let served = FakeRoutes::new(Feed::tables(vec![RouteTable { generation: 7, routes: vec![] }])).serve().await;
        let url = served.url();
        let mut client = RoutesClient::connect(url.clone()).await.expect("connect");
        let mut stream = client.watch_routes(WatchRoutesRequest {}).await.expect("watch").into_inner();
        assert_eq!(stream.message().await.expect("a table").map(|t| t.generation), Some(7));
        tokio::time::timeout(Duration::from_secs(5), served.stop()).await.expect("stops though a stream is open");
        let after = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("the stream ends");
        assert!(!matches!(after, Ok(Some(_))), "{after:?}");
        assert!(RoutesClient::connect(url).await.is_err(), "the port is closed");
    }
}
