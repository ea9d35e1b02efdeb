//! Each request's observation: its trace (joined to the client's `traceparent`, sampled
//! by the edge), its span, and its HTTP metrics, both by route template.
use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::Response,
    middleware::Next,
};
use tracing::{Span, field::Empty};

use crate::{
    metrics::{Metrics, UNMATCHED, method_label},
    rest,
};

/// The route template of a request (`/call/{slug}/{*path}`), `None` when no route matched.
fn route(req: &Request) -> Option<&str> {
    req.extensions().get::<MatchedPath>().map(MatchedPath::as_str)
}

/// Runs the request in its trace: the sampling decision is made here, before any span.
pub async fn trace(req: Request, next: Next) -> Response<Body> {
    let ctx = souq_proto::trace::Ctx::at_edge(req.headers());
    ctx.scope(next.run(req)).await
}

/// The span of one request: the server span of its trace, named `METHOD route`, a child
/// of the client's `traceparent` when it sends one. The path is recorded with any token
/// or API key in it redacted, so single-use links and keys never reach the logs.
pub fn request_span(req: &Request) -> Span {
    let path = rest::call::redact_keys(req.uri().path());
    let path = match path.strip_prefix("/api/v1/auth/verify-email/") {
        Some(_) => "/api/v1/auth/verify-email/…",
        None => path.as_ref(),
    };
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let method = method_label(req.method());
    let route = route(req);
    let name = match route {
        Some(r) => format!("{method} {r}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        method = %req.method(),
        path = %path,
        request_id = %id,
        trace_id = Empty,
    );
    if let Some(ctx) = souq_proto::trace::current() {
        ctx.adopt(&span, req.headers());
    }
    span
}

/// Records the response's status in the request's span (an error status for 5xx).
pub fn on_response(resp: &Response<Body>, latency: Duration, span: &Span) {
    let status = resp.status().as_u16();
    // As i64: tracing-opentelemetry exports a u64 as a string, and the attribute is an int.
    span.record("http.response.status_code", i64::from(status));
    if resp.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    tracing::debug!(status, latency_ms = latency.as_millis(), "finished processing request");
}

/// Counts and times each request by route template, method and status class.
pub async fn count(metrics: Arc<Metrics>, req: Request, next: Next) -> Response<Body> {
    let started = std::time::Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    metrics.http_request(route, &method, resp.status().as_u16(), started.elapsed());
    resp
}
