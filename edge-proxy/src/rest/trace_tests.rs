//! Trace ids in problem+json, and the request's span in OpenTelemetry: the problem
//! carries the request's trace id, which is the client's when it sends a `traceparent`.
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;

use crate::rest::router_tests::{app, get, problem, send, token};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Runs `test` on a current-thread runtime with `subscriber` as this thread's default.
/// A second dispatcher stays registered meanwhile: while only one is, tracing-core works
/// out a callsite's interest on whichever thread hits it first, and another test's
/// thread, with no subscriber, would switch this test's spans off for good.
fn traced(subscriber: impl tracing::Subscriber + Send + Sync + 'static, test: impl Future<Output = ()>) {
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(test);
    });
}

#[test]
fn a_problem_carries_the_trace_id_of_its_request() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
    traced(subscriber, async {
        let (app, _) = app(1024).await;

        // The client's trace is joined: its trace id comes back.
        let mut req = get("/no/such/route", None);
        req.headers_mut().insert("traceparent", TRACEPARENT.parse().expect("header"));
        let (s, _, b) = send(&app, req).await;
        assert_eq!(s.as_u16(), 404);
        assert_eq!(problem(&b)["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

        // Without one, the edge starts a trace; a handler's error carries it too.
        let (s, _, b) = send(&app, get("/call/nope/x", Some(&token("u1")))).await;
        assert_eq!(s.as_u16(), 404);
        let id = problem(&b)["trace_id"].as_str().map(str::to_owned).expect("a trace id");
        assert!(id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");

        // An extractor's refusal (no credentials) is made in the span as well.
        let (s, _, b) = send(&app, get("/api/v1/apis", None)).await;
        assert_eq!(s.as_u16(), 401);
        assert!(problem(&b)["trace_id"].is_string(), "{}", String::from_utf8_lossy(&b));
    });
}

/// Keeps every span that ends.
#[derive(Debug, Clone, Default)]
struct Kept(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Kept {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().expect("lock").extend(batch);
        Ok(())
    }
}

/// As the cli installs it: requests enter sampled or not, and only sampled ones make
/// OpenTelemetry spans.
#[test]
fn the_request_span_is_the_server_span_of_a_sampled_trace() {
    use opentelemetry::{
        Value,
        trace::{SpanKind, Status},
    };
    use tracing_subscriber::Layer as _;
    let kept = Kept::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_id_generator(souq_proto::trace::RequestIds::default())
        .with_simple_exporter(kept.clone())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("t"))
        .with_filter(souq_proto::trace::otel_filter(vec!["souq_edge_proxy"]));
    let mut fresh_trace = String::new();
    traced(tracing_subscriber::registry().with(layer), async {
        let (app, _) = app(1024).await;
        // Only this test changes the ratio: the others do not look at spans.
        souq_proto::trace::set_sample_ratio(1.0);
        let mut req = get("/call/boom/x", Some(&token("u1")));
        req.headers_mut().insert("traceparent", TRACEPARENT.parse().expect("header"));
        assert_eq!(send(&app, req).await.0.as_u16(), 502);
        let (s, _, b) = send(&app, get("/no/such/route", None)).await;
        assert_eq!(s.as_u16(), 404);
        fresh_trace = problem(&b)["trace_id"].as_str().expect("a trace id").to_owned();

        // An unsampled request makes no OpenTelemetry span, yet has its trace id.
        souq_proto::trace::set_sample_ratio(0.0);
        let (s, _, b) = send(&app, get("/api/v1/apis", None)).await;
        assert_eq!(s.as_u16(), 401);
        assert!(problem(&b)["trace_id"].is_string());
    });
    let spans = kept.0.lock().expect("lock").clone();
    assert_eq!(spans.len(), 2, "one span per sampled request: {spans:?}");
    let attr = |s: &opentelemetry_sdk::trace::SpanData, k: &str| {
        s.attributes.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.clone())
    };
    let call = spans.iter().find(|s| s.name == "GET /call/{slug}/{*path}").expect("the call's span");
    assert_eq!(call.span_kind, SpanKind::Server);
    assert_eq!(call.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(call.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(call.parent_span_is_remote);
    assert_eq!(attr(call, "http.route"), Some(Value::from("/call/{slug}/{*path}")));
    assert_eq!(attr(call, "http.request.method"), Some(Value::from("GET")));
    assert_eq!(attr(call, "http.response.status_code"), Some(Value::I64(502)));
    assert!(matches!(call.status, Status::Error { .. }), "{:?}", call.status);
    let unmatched = spans.iter().find(|s| s.name == "GET").expect("the unmatched request's span");
    assert_eq!(unmatched.span_context.trace_id().to_string(), fresh_trace, "a new trace has the problem's trace id");
    assert_eq!(attr(unmatched, "http.route"), None);
    assert_eq!(attr(unmatched, "http.response.status_code"), Some(Value::I64(404)));
    assert!(!matches!(unmatched.status, Status::Error { .. }), "a 4xx is no server error");
}
