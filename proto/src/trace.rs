//! Trace context across hops: the W3C `traceparent` in and out of HTTP headers and gRPC
//! metadata, the trace id of the current request, and the span a shim reports.
//!
//! Everything here works on the current `tracing` span through `tracing-opentelemetry`;
//! with no OpenTelemetry layer installed (unit tests) it does nothing and costs little.
use std::{collections::HashMap, sync::OnceLock, time::SystemTime};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{Span as _, SpanKind, TraceContextExt, Tracer},
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracer};
use tonic::{
    codegen::http::{HeaderMap, HeaderName, HeaderValue},
    metadata::{MetadataKey, MetadataMap, MetadataValue},
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The instrumentation scope of the shims' spans; telemetry export gives spans of this
/// scope the service name `souq-shim`.
pub const SHIM_SCOPE: &str = "souq-shim";

/// The longest `traceparent` passed on to a shim (the W3C form is 55 characters).
pub const MAX_TRACEPARENT: usize = 128;

struct HeadersIn<'a>(&'a HeaderMap);

impl Extractor for HeadersIn<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersOut<'a>(&'a mut HeaderMap);

impl Injector for HeadersOut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataOut<'a>(&'a mut MetadataMap);

impl Injector for MetadataOut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_str())) {
            self.0.insert(k, v);
        }
    }
}

/// The remote parent that `headers` name in `traceparent` (and `tracestate`); an empty
/// context when there is none or it is malformed.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeadersIn(headers))
}

/// Makes `span` a child of the remote parent in `headers` (a client's, or the previous
/// hop's), and records the span's trace id in its `trace_id` field, which every log line
/// inside the span then carries. Call it right after creating the span.
pub fn adopt(span: &tracing::Span, headers: &HeaderMap) {
    let parent = extract(headers);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    if let Some(id) = trace_id(span) {
        span.record("trace_id", tracing::field::display(id));
    }
}

/// The trace id of `span`, in the 32 hex digits of `traceparent`.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id of the current span, for problem+json's `trace_id`.
pub fn current_trace_id() -> Option<String> {
    trace_id(&tracing::Span::current())
}

/// Puts the current span's context into outgoing gRPC metadata, so the next hop's span
/// joins this trace.
pub fn inject(meta: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataOut(meta));
    }
}

/// Puts the current span's context into outgoing HTTP headers.
pub fn inject_headers(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersOut(headers));
    }
}

/// The current span's `traceparent`, for the frame to a shim.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").filter(|t| t.len() <= MAX_TRACEPARENT)
}

/// The HTTP request type a gRPC server's `trace_fn` receives.
pub type GrpcRequest = tonic::codegen::http::Request<()>;

/// A function for tonic's `Server::trace_fn`: the server span of each gRPC request
/// (`rpc.system`, `rpc.method`, `trace_id`), a child of the caller's `traceparent` when
/// it sent one. A macro, so the span is made in the serving crate: its module decides
/// which service the span is exported under.
#[macro_export]
macro_rules! grpc_server_span {
    () => {
        |req: &$crate::trace::GrpcRequest| -> ::tracing::Span {
            let span = ::tracing::info_span!(
                "grpc",
                otel.name = %req.uri().path(),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = %req.uri().path(),
                trace_id = ::tracing::field::Empty,
            );
            $crate::trace::adopt(&span, req.headers());
            span
        }
    };
}

static SHIM_TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Sets the tracer that [`record_shim_span`] reports with (once per process; telemetry
/// set-up calls it when it exports traces).
pub fn set_shim_tracer(tracer: SdkTracer) {
    let _ = SHIM_TRACER.set(tracer);
}

/// Reports the time a shim spent on one run, as it measured it, as a span of the shim's
/// own service and a child of the current span. Nothing is reported when the current
/// trace is not sampled or no shim tracer is set.
pub fn record_shim_span(name: &'static str, start: SystemTime, end: SystemTime, attributes: Vec<KeyValue>) {
    let Some(tracer) = SHIM_TRACER.get() else { return };
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    span.end_with_timestamp(end.max(start));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_traceparent_names_no_parent() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-zz-01"));
        assert!(!extract(&headers).span().span_context().is_valid());
    }

    #[test]
    fn a_valid_traceparent_is_read() {
        let mut headers = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", HeaderValue::from_static(tp));
        let cx = extract(&headers);
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(cx.span().span_context().is_sampled());
    }

    #[test]
    fn without_a_layer_nothing_is_injected() {
        let mut meta = MetadataMap::new();
        inject(&mut meta);
        assert!(meta.is_empty());
        assert_eq!(current_trace_id(), None);
    }
}
