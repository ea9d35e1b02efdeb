//! Counts and times every gRPC request a service answers: [`Meter::wrap`] wraps one
//! service (outside its interceptor, so refusals count too).
//!
//! The code comes from the response's headers: tonic answers every error of a unary call
//! "trailers-only" (`grpc-status` in the headers), and a response that starts without one
//! is an answer (`OK`); its trailers would only tell an encoding failure of the reply.
//! Streams (the route and access feeds, logs, health watches) are counted and timed when
//! their response starts; they are not held. A request whose caller goes away before the
//! answer counts as `Cancelled`.
use std::{
    collections::HashSet,
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use tonic::{
    Code,
    body::Body,
    codegen::{BoxFuture, Service, http},
    server::NamedService,
};

use crate::metrics::Metrics;

/// Most distinct method labels; past it new ones count as `unknown`.
const MAX_METHODS: usize = 256;
/// Longest method name (after the service) taken as a label.
const MAX_METHOD_NAME: usize = 64;
/// The label of a method that is not one: malformed, unimplemented, or past [`MAX_METHODS`].
const UNKNOWN: &str = "unknown";

/// What the wrapped services share: the metrics, and the method labels seen so far.
#[derive(Debug)]
pub(crate) struct Meter {
    metrics: Arc<Metrics>,
    seen: Mutex<HashSet<String>>,
}

impl Meter {
    /// A meter feeding `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Meter> {
        Arc::new(Meter { metrics, seen: Mutex::default() })
    }

    /// `svc`, counted and timed.
    pub(crate) fn wrap<S>(self: &Arc<Self>, svc: S) -> Metered<S> {
        Metered { inner: svc, meter: self.clone() }
    }

    /// The bounded method label of `path` for a service named `service` that answered
    /// `code`: the path itself when it names one method of that service.
    fn label(&self, service: &str, path: &str, code: Code) -> String {
        let name = path.strip_prefix('/').and_then(|p| p.strip_prefix(service)).and_then(|p| p.strip_prefix('/'));
        let well_formed = name.is_some_and(|n| {
            !n.is_empty() && n.len() <= MAX_METHOD_NAME && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if !well_formed || code == Code::Unimplemented {
            return UNKNOWN.to_owned();
        }
        let Ok(mut seen) = self.seen.lock() else { return UNKNOWN.to_owned() };
        if seen.contains(path) || (seen.len() < MAX_METHODS && seen.insert(path.to_owned())) {
            path.to_owned()
        } else {
            UNKNOWN.to_owned()
        }
    }

    fn record(&self, service: &str, path: &str, code: Code, started: Instant) {
        self.metrics.grpc(self.label(service, path, code), code_name(code), started.elapsed());
    }
}

/// A service counted and timed by a [`Meter`]; served under the inner service's name.
#[derive(Debug, Clone)]
pub(crate) struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S: NamedService> NamedService for Metered<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<Body>> for Metered<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible> + NamedService,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let mut pending =
            Pending { meter: self.meter.clone(), path: req.uri().path().to_owned(), started: Instant::now(), done: false };
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            pending.done = true;
            pending.meter.record(S::NAME, &pending.path, code_of(&response), pending.started);
            Ok(response)
        })
    }
}

/// A request not yet answered: counted as `Cancelled` if dropped so.
struct Pending {
    meter: Arc<Meter>,
    path: String,
    started: Instant,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            // The service name is not known here; a dropped call is labelled by its path
            // only if that path was already seen as a method.
            let label = self.meter.seen.lock().ok().filter(|s| s.contains(&self.path)).map(|_| self.path.clone());
            let label = label.unwrap_or_else(|| UNKNOWN.to_owned());
            self.meter.metrics.grpc(label, code_name(Code::Cancelled), self.started.elapsed());
        }
    }
}

/// The gRPC code of a response: its `grpc-status` header (trailers-only answers), else
/// `OK` for an HTTP 200 (the status follows in the trailers), else `Unknown`.
fn code_of<B>(response: &http::Response<B>) -> Code {
    match response.headers().get("grpc-status") {
        Some(v) => Code::from_bytes(v.as_bytes()),
        None if response.status() == http::StatusCode::OK => Code::Ok,
        None => Code::Unknown,
    }
}

/// The canonical name of a gRPC code: `OK`, `NotFound`…
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
#[path = "grpc_metrics_tests.rs"]
mod tests;
