//! Trace context across hops: the W3C `traceparent` in and out of HTTP headers and gRPC
//! metadata, the sampling decision, the trace id of the current request, and the span a
//! shim reports.
//!
//! Whether a request is traced is decided once, where it enters a role and before any
//! span exists: [`Ctx`] holds the request's trace id, this hop's span id and that
//! decision, in a task-local for the request's future ([`Ctx::scope`]). Only a sampled
//! request's spans reach OpenTelemetry ([`otel_filter`]); an unsampled request costs a
//! task-local and a plain `tracing` span, and its `traceparent` is written by hand with
//! the unsampled flag. With no OpenTelemetry layer installed (no export, unit tests)
//! trace ids are still made, for log lines and problem+json.
mod gate;
mod server;

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        LazyLock, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{Span as _, SpanId, SpanKind, TraceContextExt, TraceId, Tracer},
};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{IdGenerator, RandomIdGenerator, SdkTracer},
};
pub use gate::Gate;
pub use server::{ServerTraces, Traced};
use tokio::task::futures::TaskLocalFuture;
use tonic::{
    codegen::http::{HeaderMap, HeaderName},
    metadata::{MetadataMap, MetadataValue},
};
use tracing::{Metadata, subscriber::Interest};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    filter::dynamic_filter_fn,
    layer::{self, Filter},
};

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

/// The remote parent that `headers` name in `traceparent` (and `tracestate`); an empty
/// context when there is none or it is malformed.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeadersIn(headers))
}

/// One request's trace context at this hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The trace the request belongs to: the caller's, or a new one.
    pub trace_id: TraceId,
    /// This hop's span id, for the `traceparent` of an unsampled request's next hop.
    span_id: SpanId,
    /// Whether the request's spans are recorded and exported.
    pub sampled: bool,
    /// Whether the caller named the trace (a valid `traceparent`).
    joined: bool,
}

tokio::task_local! {
    static CURRENT: Ctx;
}

/// The share of traces kept, as the bits of an `f64` (0 until telemetry sets it).
static RATIO: AtomicU64 = AtomicU64::new(0);
/// Keys the edge's decision on a trace id, so a client cannot pick ids that pass.
static SALT: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// Sets the share of new traces that are sampled, 0 to 1 (telemetry set-up calls it when
/// it exports traces; until then nothing is sampled).
pub fn set_sample_ratio(ratio: f64) {
    RATIO.store(ratio.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
}

/// Whether a trace that starts or enters here is kept: a keyed hash of its id against
/// the ratio, so a client's choice of trace id or of the sampled flag decides nothing.
fn keep(trace_id: TraceId, ratio: f64) -> bool {
    // The top 53 bits of the hash, as a fraction in [0, 1).
    let draw = (SALT.hash_one(trace_id.to_bytes()) >> 11) as f64 / (1u64 << 53) as f64;
    draw < ratio
}

/// The trace id, parent span id and sampled flag of a W3C `traceparent`; `None` when it
/// is missing or malformed.
fn parse(headers: &HeaderMap) -> Option<(TraceId, SpanId, bool)> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    // Version 00 has exactly four fields; a later version may add more.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, span_id, flags & 1 == 1))
}

impl Ctx {
    fn new(trace_id: TraceId, sampled: bool, joined: bool) -> Ctx {
        Ctx { trace_id, span_id: RandomIdGenerator::default().new_span_id(), sampled, joined }
    }

    /// A request from outside Souq: it joins the client's trace when `headers` name one,
    /// but the client's sampled flag does not decide; the ratio does, by [`keep`].
    pub fn at_edge(headers: &HeaderMap) -> Ctx {
        let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
        match parse(headers) {
            Some((trace_id, _, _)) => Ctx::new(trace_id, ratio > 0.0 && keep(trace_id, ratio), true),
            None => {
                let trace_id = RandomIdGenerator::default().new_trace_id();
                Ctx::new(trace_id, ratio > 0.0 && keep(trace_id, ratio), false)
            }
        }
    }

    /// A request from another Souq role: it follows the caller's decision; one that
    /// names no trace starts its own, kept by the ratio.
    pub fn at_hop(headers: &HeaderMap) -> Ctx {
        match parse(headers) {
            Some((trace_id, _, sampled)) => Ctx::new(trace_id, sampled, true),
            None => Ctx::at_edge(headers),
        }
    }

    /// The trace id in the 32 hex digits of `traceparent`.
    pub fn trace_hex(&self) -> String {
        self.trace_id.to_string()
    }

    /// The `traceparent` naming this hop, with this request's sampled flag.
    fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }

    /// Runs `fut` as this request: its spans, and the calls it makes, belong to this trace.
    pub fn scope<F: Future>(self, fut: F) -> TaskLocalFuture<Ctx, F> {
        CURRENT.scope(self, fut)
    }

    /// Makes `span` (made inside [`Ctx::scope`]) this request's span at this hop: it
    /// records the trace id in the span's `trace_id` field, which every log line inside
    /// the span then carries, and, when the request is sampled, makes the span's
    /// OpenTelemetry counterpart a child of the caller's span in `headers`.
    pub fn adopt(&self, span: &tracing::Span, headers: &HeaderMap) {
        span.record("trace_id", tracing::field::display(self.trace_id));
        if self.sampled {
            if self.joined {
                let _ = span.set_parent(extract(headers));
            }
            // Started now, inside the scope, so a new trace takes this request's id
            // ([`RequestIds`]).
            let _ = span.context();
        }
    }
}

/// The current request's trace context, inside [`Ctx::scope`].
pub fn current() -> Option<Ctx> {
    CURRENT.try_with(|c| *c).ok()
}

/// The trace id of the current request, for problem+json's `trace_id`.
pub fn current_trace_id() -> Option<String> {
    current().map(|c| c.trace_hex())
}

/// The `traceparent` for the current request's next hop: the current OpenTelemetry
/// span's when the request is sampled (or outside any request, when a span is current),
/// else written from [`Ctx`].
pub fn current_traceparent() -> Option<String> {
    let ctx = current();
    if ctx.is_some_and(|c| !c.sampled) {
        return ctx.map(|c| c.traceparent());
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return ctx.map(|c| c.traceparent());
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").filter(|t| t.len() <= MAX_TRACEPARENT)
}

/// Puts the current request's `traceparent` into outgoing gRPC metadata, so the next
/// hop's span joins this trace and follows its sampling decision.
pub fn inject(meta: &mut MetadataMap) {
    if let Some(v) = current_traceparent().and_then(|t| MetadataValue::try_from(t).ok()) {
        meta.insert("traceparent", v);
    }
}

/// Trace ids for OpenTelemetry: a trace that starts inside a request takes the
/// request's id, so the exported trace and the logs and problem+json agree.
#[derive(Debug, Default)]
pub struct RequestIds(RandomIdGenerator);

impl IdGenerator for RequestIds {
    fn new_trace_id(&self) -> TraceId {
        current().map_or_else(|| self.0.new_trace_id(), |c| c.trace_id)
    }
    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Whether `meta` is a span OpenTelemetry may see: a span (not an event) at info or
/// above of one of the crates in `modules`.
fn traceable(meta: &Metadata<'_>, modules: &[&'static str]) -> bool {
    meta.is_span() && meta.level() <= &tracing::Level::INFO && modules.iter().any(|m| meta.target().starts_with(m))
}

/// Whether the current request is sampled.
fn sampled_now() -> bool {
    current().is_some_and(|c| c.sampled)
}

/// The per-layer filter of the OpenTelemetry layer: the traceable spans made while a
/// sampled request is current (with [`Gate`] as the global filter, so that unsampled
/// requests' spans are not made at all unless the logs want them).
pub fn otel_filter<S>(modules: Vec<&'static str>) -> impl Filter<S> {
    dynamic_filter_fn(|_: &Metadata<'_>, _: &layer::Context<'_, S>| sampled_now()).with_callsite_filter(
        move |meta: &'static Metadata<'static>| {
            if traceable(meta, &modules) { Interest::sometimes() } else { Interest::never() }
        },
    )
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
    if current().is_some_and(|c| !c.sampled) {
        return;
    }
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
    use tonic::codegen::http::HeaderValue;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(traceparent: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(traceparent));
        headers
    }

    #[test]
    fn a_malformed_traceparent_names_no_trace() {
        for bad in [
            "00-zz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(parse(&headers(bad)), None, "{bad}");
            assert!(!extract(&headers(bad)).span().span_context().is_valid(), "{bad}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(parse(&headers(later)).is_some(), "a later version may add fields");
    }

    #[test]
    fn a_hop_follows_its_caller() {
        let ctx = Ctx::at_hop(&headers(TRACEPARENT));
        assert_eq!(ctx.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(ctx.sampled);
        let ctx = Ctx::at_hop(&headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        assert!(!ctx.sampled);
    }

    #[test]
    fn a_client_joins_a_trace_but_cannot_force_sampling() {
        // The ratio is 0 in unit tests: the client's sampled flag is not followed.
        let ctx = Ctx::at_edge(&headers(TRACEPARENT));
        assert_eq!(ctx.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!ctx.sampled);
        for t in 1..200u128 {
            assert!(!keep(TraceId::from(t), 0.0));
            assert!(keep(TraceId::from(t), 1.0));
        }
    }

    #[test]
    fn the_edge_keeps_about_the_ratio() {
        let kept = (1..=4000u128).filter(|t| keep(TraceId::from(*t), 0.25)).count();
        assert!((800..1200).contains(&kept), "{kept} of 4000 kept at 0.25");
    }

    #[tokio::test]
    async fn an_unsampled_request_passes_its_trace_on() {
        let mut meta = MetadataMap::new();
        inject(&mut meta);
        assert!(meta.is_empty(), "outside a request, nothing is injected");
        assert_eq!(current_trace_id(), None);

        let ctx = Ctx::at_hop(&headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        ctx.scope(async move {
            assert_eq!(current_trace_id().as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
            inject(&mut meta);
            let sent = meta.get("traceparent").and_then(|v| v.to_str().ok()).expect("a traceparent");
            let (trace, span, sampled) = parse(&headers(sent.to_owned().leak())).expect("well formed");
            assert_eq!((trace, sampled), (ctx.trace_id, false));
            assert_ne!(span.to_string(), "00f067aa0ba902b7", "this hop's span id, not the caller's");
        })
        .await;
    }
}
