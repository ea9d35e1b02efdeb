//! The gRPC servers' side of tracing: each request runs in its trace, inside its server
//! span.
use tokio::task::futures::TaskLocalFuture;
use tonic::codegen::http;
use tracing::{Instrument, instrument::Instrumented};

use super::{CURRENT, Ctx};

/// A tower layer for a gRPC server: each request runs in its [`Ctx`] (from the caller's
/// `traceparent`) inside the server span `make` makes from the request's path. Build it
/// with [`grpc_server_traces!`](crate::grpc_server_traces), so the span is made in the
/// serving crate: its module decides which service the span is exported under.
#[derive(Debug, Clone, Copy)]
pub struct ServerTraces {
    make: fn(&str) -> tracing::Span,
}

impl ServerTraces {
    /// The layer, with `make` making each request's span.
    pub fn new(make: fn(&str) -> tracing::Span) -> Self {
        ServerTraces { make }
    }
}

impl<S> tower::Layer<S> for ServerTraces {
    type Service = Traced<S>;
    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner, make: self.make }
    }
}

/// A gRPC service whose requests each run in their trace (see [`ServerTraces`]).
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    make: fn(&str) -> tracing::Span,
}

impl<S, B> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Ctx, Instrumented<S::Future>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ctx = Ctx::at_hop(req.headers());
        let fut = CURRENT.sync_scope(ctx, || {
            let span = (self.make)(req.uri().path());
            ctx.adopt(&span, req.headers());
            let fut = span.in_scope(|| self.inner.call(req));
            fut.instrument(span)
        });
        ctx.scope(fut)
    }
}

/// A [`ServerTraces`] layer for tonic's `Server::layer`: each gRPC request's server span
/// (`rpc.system`, `rpc.method`, `trace_id`) in its trace. A macro, so the span is made in
/// the serving crate.
#[macro_export]
macro_rules! grpc_server_traces {
    () => {
        $crate::trace::ServerTraces::new(|path: &str| -> ::tracing::Span {
            ::tracing::info_span!(
                "grpc",
                otel.name = %path,
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = %path,
                trace_id = ::tracing::field::Empty,
            )
        })
    };
}
