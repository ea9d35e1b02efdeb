//! The edge's Prometheus metrics: HTTP requests, calls to deployed APIs, refusals,
//! metering, and the age of the followed tables (computed when scraped).
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::Method;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};
use souq_proto::metrics::{latency_histogram, status_class};

/// HTTP requests answered (exposed as `souq_edge_http_requests_total`).
pub const HTTP_REQUESTS: &str = "souq_edge_http_requests";
/// Time to answer an HTTP request (to the response's head), in seconds.
pub const HTTP_REQUEST_DURATION: &str = "souq_edge_http_request_duration_seconds";
/// Calls to deployed APIs (exposed as `souq_edge_api_calls_total`).
pub const API_CALLS: &str = "souq_edge_api_calls";
/// Time to answer a call to a deployed API, in seconds.
pub const API_CALL_DURATION: &str = "souq_edge_api_call_duration_seconds";
/// Requests the edge refused by a limit (exposed as `souq_edge_refusals_total`).
pub const REFUSALS: &str = "souq_edge_refusals";
/// Usage events in this process not yet handed on.
pub const METERING_BACKLOG: &str = "souq_edge_metering_backlog";
/// Failed usage reports to the control plane (exposed as `…_flush_errors_total`).
pub const METERING_FLUSH_ERRORS: &str = "souq_edge_metering_flush_errors";
/// Entries in this edge's Redis usage stream when the flusher last looked.
pub const METERING_STREAM_ENTRIES: &str = "souq_edge_metering_stream_entries";
/// Seconds since the route table was last received.
pub const ROUTE_TABLE_AGE: &str = "souq_edge_route_table_age_seconds";
/// Seconds since the access table was last received.
pub const ACCESS_TABLE_AGE: &str = "souq_edge_access_table_age_seconds";

/// The `route` of a request no route matched.
pub const UNMATCHED: &str = "unmatched";
/// The `api` of a call whose slug is in no route.
pub const UNKNOWN_API: &str = "unknown";

/// Labels of [`HTTP_REQUESTS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template, or [`UNMATCHED`].
    pub route: String,
    /// The method ([`method_label`]).
    pub method: &'static str,
    /// `2xx`, `4xx`, …
    pub status_class: &'static str,
}

/// Labels of [`HTTP_REQUEST_DURATION`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template, or [`UNMATCHED`].
    pub route: String,
    /// The method ([`method_label`]).
    pub method: &'static str,
}

/// Labels of [`API_CALLS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The API's slug, or [`UNKNOWN_API`].
    pub api: String,
    /// `2xx`, `4xx`, …
    pub status_class: &'static str,
}

/// Labels of [`API_CALL_DURATION`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// The API's slug, or [`UNKNOWN_API`].
    pub api: String,
}

/// Labels of [`REFUSALS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`Refusal::as_str`].
    pub reason: &'static str,
}

/// Why the edge refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over the plan's calls a minute.
    RateLimit,
    /// The plan's monthly quota is used up.
    Quota,
    /// Too many at once: log follows open, or runs an agent refused as too many.
    Concurrency,
    /// A call's body over the call body limit.
    BodyTooLarge,
    /// Usage metering is backed up (503).
    Metering,
}

impl Refusal {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::RateLimit => "rate_limit",
            Refusal::Quota => "quota",
            Refusal::Concurrency => "concurrency",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::Metering => "metering_backlog",
        }
    }
}

/// A bounded method label: the standard methods, else `other` (calls take any method).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// When a followed table was last received, for its age at scrape time.
#[derive(Debug)]
pub struct Receipt {
    start: Instant,
    /// Nanoseconds from `start` to the last receipt, plus one; 0 before the first.
    last: AtomicU64,
}

impl Default for Receipt {
    fn default() -> Self {
        Receipt { start: Instant::now(), last: AtomicU64::new(0) }
    }
}

impl Receipt {
    /// Notes a receipt now.
    pub fn mark(&self) {
        let since = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last.store(since.saturating_add(1), Ordering::Relaxed);
    }

    /// Time since the last receipt; since this was made when there was none.
    pub fn age(&self) -> Duration {
        let at = Duration::from_nanos(self.last.load(Ordering::Relaxed).saturating_sub(1));
        self.start.elapsed().saturating_sub(at)
    }
}

/// A reading taken at scrape time (the metering backlog), set once the meter exists.
#[derive(Default)]
pub struct Probe(Mutex<Option<Box<dyn Fn() -> i64 + Send + Sync>>>);

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

impl Probe {
    /// Reads with `read` from now on.
    pub fn set(&self, read: impl Fn() -> i64 + Send + Sync + 'static) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(read));
    }

    /// The reading; 0 when nothing was set.
    pub fn read(&self) -> i64 {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map_or(0, |read| read())
    }
}

/// A histogram family with [`souq_proto::metrics::LATENCY_BUCKETS`].
pub type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the edge.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// [`HTTP_REQUESTS`].
    pub http_requests: Family<HttpLabels, Counter>,
    /// [`HTTP_REQUEST_DURATION`].
    pub http_request_duration: Latencies<RouteLabels>,
    /// [`API_CALLS`].
    pub api_calls: Family<ApiLabels, Counter>,
    /// [`API_CALL_DURATION`].
    pub api_call_duration: Latencies<ApiLabel>,
    /// [`REFUSALS`].
    pub refusals: Family<ReasonLabel, Counter>,
    /// [`METERING_FLUSH_ERRORS`].
    pub metering_flush_errors: Counter,
    /// [`METERING_STREAM_ENTRIES`].
    pub metering_stream_entries: Gauge,
    /// [`METERING_BACKLOG`], read when scraped.
    pub metering_backlog: Arc<Probe>,
    /// The route table's receipts, for [`ROUTE_TABLE_AGE`].
    pub route_table: Arc<Receipt>,
    /// The access table's receipts, for [`ACCESS_TABLE_AGE`].
    pub access_table: Arc<Receipt>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: Family::default(),
            http_request_duration: Family::new_with_constructor(latency_histogram),
            api_calls: Family::default(),
            api_call_duration: Family::new_with_constructor(latency_histogram),
            refusals: Family::default(),
            metering_flush_errors: Counter::default(),
            metering_stream_entries: Gauge::default(),
            metering_backlog: Arc::default(),
            route_table: Arc::default(),
            access_table: Arc::default(),
        }
    }
}

/// The readings [`Metrics`] computes at scrape time.
#[derive(Debug)]
struct Readings {
    backlog: Arc<Probe>,
    route_table: Arc<Receipt>,
    access_table: Arc<Receipt>,
}

impl Collector for Readings {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backlog = ConstGauge::new(self.backlog.read());
        backlog.encode(encoder.encode_descriptor(
            METERING_BACKLOG,
            "Usage events admitted in this process and not yet handed on (calls under way included)",
            None,
            backlog.metric_type(),
        )?)?;
        for (name, help, receipt) in [
            (ROUTE_TABLE_AGE, "Seconds since the route table was last received", &self.route_table),
            (ACCESS_TABLE_AGE, "Seconds since the access table was last received", &self.access_table),
        ] {
            let age = ConstGauge::new(receipt.age().as_secs_f64());
            age.encode(encoder.encode_descriptor(name, help, None, age.metric_type())?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Fresh metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(HTTP_REQUESTS, "HTTP requests answered", m.http_requests.clone());
        registry.register(
            HTTP_REQUEST_DURATION,
            "Seconds to answer an HTTP request (to the response head)",
            m.http_request_duration.clone(),
        );
        registry.register(API_CALLS, "Calls to deployed APIs", m.api_calls.clone());
        registry.register(API_CALL_DURATION, "Seconds to answer a call to a deployed API", m.api_call_duration.clone());
        registry.register(REFUSALS, "Requests the edge refused by a limit", m.refusals.clone());
        registry.register(METERING_FLUSH_ERRORS, "Failed usage reports to the control plane", m.metering_flush_errors.clone());
        registry.register(
            METERING_STREAM_ENTRIES,
            "Entries in this edge's Redis usage stream when last looked at",
            m.metering_stream_entries.clone(),
        );
        registry.register_collector(Box::new(Readings {
            backlog: m.metering_backlog.clone(),
            route_table: m.route_table.clone(),
            access_table: m.access_table.clone(),
        }));
        m
    }

    /// Counts one HTTP request.
    pub fn http_request(&self, route: &str, method: &Method, status: u16, took: Duration) {
        let method = method_label(method);
        let labels = HttpLabels { route: route.to_owned(), method, status_class: status_class(status) };
        self.http_requests.get_or_create(&labels).inc();
        self.http_request_duration
            .get_or_create(&RouteLabels { route: labels.route, method })
            .observe(took.as_secs_f64());
    }

    /// Counts one call to the API `api` (a slug, or [`UNKNOWN_API`]).
    pub fn api_call(&self, api: String, status: u16, took: Duration) {
        self.api_calls.get_or_create(&ApiLabels { api: api.clone(), status_class: status_class(status) }).inc();
        self.api_call_duration.get_or_create(&ApiLabel { api }).observe(took.as_secs_f64());
    }

    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        self.refusals.get_or_create(&ReasonLabel { reason: why.as_str() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_are_exposed_with_their_names() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.http_request("/call/{slug}", &Method::from_bytes(b"BREW").expect("method"), 201, Duration::from_millis(3));
        m.api_call("s".into(), 503, Duration::from_millis(3));
        m.refused(Refusal::Quota);
        m.metering_flush_errors.inc();
        m.metering_backlog.set(|| 7);
        m.route_table.mark();
        let text = souq_proto::metrics::encode(&registry);
        for line in [
            r#"souq_edge_http_requests_total{route="/call/{slug}",method="other",status_class="2xx"} 1"#,
            r#"souq_edge_http_request_duration_seconds_count{route="/call/{slug}",method="other"} 1"#,
            r#"souq_edge_api_calls_total{api="s",status_class="5xx"} 1"#,
            r#"souq_edge_api_call_duration_seconds_count{api="s"} 1"#,
            r#"souq_edge_refusals_total{reason="quota"} 1"#,
            "souq_edge_metering_flush_errors_total 1",
            "souq_edge_metering_stream_entries 0",
            "souq_edge_metering_backlog 7",
            "# TYPE souq_edge_route_table_age_seconds gauge",
            "# TYPE souq_edge_access_table_age_seconds gauge",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn a_table_ages_from_its_last_receipt_or_from_start() {
        let r = Receipt { start: Instant::now() - Duration::from_secs(100), last: AtomicU64::new(0) };
        assert!(r.age() >= Duration::from_secs(100));
        r.mark();
        assert!(r.age() < Duration::from_secs(1));
    }
}
