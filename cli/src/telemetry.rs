//! Process-wide telemetry: JSON log lines on stderr (filtered by `SOUQ_LOG`), and
//! OpenTelemetry traces of the roles this process runs, exported over OTLP/gRPC when an
//! endpoint is set. Each role exports under its own `service.name`.
use std::time::Duration;

use clap::Args;
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter},
};
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// How long an export may take before it is abandoned (the collector is down or slow).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A telemetry option that is wrong: the option and why (the caller exits 64).
#[derive(Debug)]
pub struct BadOption(pub String);

impl std::fmt::Display for BadOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Traces and metrics, on every role.
#[derive(Debug, Args, Clone)]
pub struct TelemetryArgs {
    /// OTLP/gRPC endpoint (plain text) to export traces to, e.g. http://otel-collector:4317. Falls back
    /// to OTEL_EXPORTER_OTLP_ENDPOINT; without either, nothing is exported (trace ids are
    /// still made, for logs and problem+json).
    #[arg(long, env = "SOUQ_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The share of traces that are sampled, 0 to 1. The edge decides for each request
    /// (a client's `traceparent` is joined, but its sampled flag does not decide); the
    /// hops after it follow the edge.
    #[arg(long, env = "SOUQ_TRACE_SAMPLE_RATIO", default_value_t = 1.0)]
    pub trace_sample_ratio: f64,
    /// A plain-HTTP listener for Prometheus (`/metrics`), `/healthz` and the gRPC health
    /// service (h2c, for Kubernetes `grpc` probes). The edge serves `/metrics` on its own
    /// port when this is unset.
    #[arg(long, env = "SOUQ_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl TelemetryArgs {
    /// The endpoint to export to, checked.
    fn endpoint(&self) -> Result<Option<String>, BadOption> {
        let endpoint = self.otlp_endpoint.clone().or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok());
        match endpoint.filter(|e| !e.is_empty()) {
            Some(e) if e.starts_with("http://") => Ok(Some(e)),
            Some(e) if e.starts_with("https://") => Err(BadOption(
                "invalid value for --otlp-endpoint: export is plain-text gRPC (http://); for TLS, run an OpenTelemetry Collector beside Souq and let it forward".into(),
            )),
            Some(_) => Err(BadOption("invalid value for --otlp-endpoint: must start with http://".into())),
            None => Ok(None),
        }
    }

    fn ratio(&self) -> Result<f64, BadOption> {
        let r = self.trace_sample_ratio;
        if (0.0..=1.0).contains(&r) {
            Ok(r)
        } else {
            Err(BadOption(format!("invalid value for --trace-sample-ratio: {r} is not between 0 and 1")))
        }
    }
}

/// A role that exports its spans under its own service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `souq-edge`.
    Edge,
    /// `souq-control-plane`.
    ControlPlane,
    /// `souq-agent`, and `souq-shim` for the spans it reports for the shims.
    Agent,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Edge => "souq-edge",
            Service::ControlPlane => "souq-control-plane",
            Service::Agent => "souq-agent",
        }
    }

    /// The crate whose spans are this role's.
    fn module(self) -> &'static str {
        match self {
            Service::Edge => "souq_edge_proxy",
            Service::ControlPlane => "souq_control_plane",
            Service::Agent => "souq_node_agent",
        }
    }
}

const SHIM_SERVICE: &str = "souq-shim";

/// Flushes the spans still buffered when dropped; keep it until the roles have stopped,
/// inside the async runtime that exports them.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            let _ = provider.shutdown_with_timeout(EXPORT_TIMEOUT);
        }
    }
}

/// Which log lines are written: `SOUQ_LOG`, or the default.
fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env("SOUQ_LOG").unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"))
}

/// Installs the global subscriber: log lines for everything, and spans of `services` into
/// OpenTelemetry. Must run inside the Tokio runtime (the OTLP exporter is a tonic client).
pub fn init(services: &[Service], traces: Option<&TelemetryArgs>) -> Result<Guard, BadOption> {
    let json = std::env::var("SOUQ_LOG_FORMAT").map_or(true, |f| f != "text");
    let lines = if json {
        fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let Some(traces) = traces.filter(|_| !services.is_empty()) else {
        tracing_subscriber::registry().with(lines.with_filter(log_filter())).init();
        return Ok(Guard(None));
    };
    let (endpoint, ratio) = (traces.endpoint()?, traces.ratio()?);
    // Without an endpoint, nothing is sampled and no OpenTelemetry layer is installed:
    // requests still get trace ids (`souq_proto::trace::Ctx`), for logs and problem+json.
    let Some(endpoint) = endpoint else {
        tracing_subscriber::registry().with(lines.with_filter(log_filter())).init();
        return Ok(Guard(None));
    };
    // Sampling is decided where a request enters (`souq_proto::trace::Ctx`), before any
    // span is made, and the OpenTelemetry layer only sees sampled requests' spans: so
    // the SDK keeps every span it is given.
    souq_proto::trace::set_sample_ratio(ratio);
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_id_generator(souq_proto::trace::RequestIds::default())
        .with_resource(Resource::builder().with_service_name(services[0].name()).build())
        .with_batch_exporter(ByService::new(&endpoint, services)?)
        .build();
    if services.contains(&Service::Agent) {
        souq_proto::trace::set_shim_tracer(provider.tracer(souq_proto::trace::SHIM_SCOPE));
    }
    // Only the roles' own spans (not the libraries' below them, and no events) of sampled
    // requests become OpenTelemetry spans.
    let modules: Vec<&'static str> = services.iter().map(|s| s.module()).collect();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("souq"))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_filter(souq_proto::trace::otel_filter(modules.clone()));
    // The log filter is global here, widened by the gate to sampled requests' spans.
    let gate = souq_proto::trace::Gate::new(log_filter(), modules);
    tracing_subscriber::registry().with(lines).with(spans).with(gate).init();
    tracing::info!(endpoint = %endpoint, sample_ratio = ratio, "exporting traces over OTLP/gRPC");
    Ok(Guard(Some(provider)))
}

/// One OTLP exporter per service of this process: each span goes to the exporter of the
/// role whose module made it (`code.module.name`), or of the shims for the shim scope, so
/// one process (`souq up`) shows up as several services.
#[derive(Debug)]
struct ByService {
    services: Vec<(&'static str, &'static str, opentelemetry_otlp::SpanExporter)>,
}

impl ByService {
    fn new(endpoint: &str, services: &[Service]) -> Result<Self, BadOption> {
        let exporter = || {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| BadOption(format!("invalid value for --otlp-endpoint: {e}")))
        };
        let mut out = Vec::new();
        for s in services {
            out.push((s.name(), s.module(), exporter()?));
        }
        if services.contains(&Service::Agent) {
            out.push((SHIM_SERVICE, "", exporter()?));
        }
        Ok(ByService { services: out })
    }

    fn route(&self, span: &SpanData) -> usize {
        if span.instrumentation_scope.name() == souq_proto::trace::SHIM_SCOPE
            && let Some(i) = self.services.iter().position(|s| s.0 == SHIM_SERVICE)
        {
            return i;
        }
        let module = span.attributes.iter().find(|kv| kv.key.as_str() == "code.module.name").map(|kv| kv.value.as_str());
        module
            .and_then(|m| self.services.iter().position(|s| !s.1.is_empty() && m.starts_with(s.1)))
            .unwrap_or(0)
    }
}

/// Ok when every one of `results` (all of them run) is.
fn every(results: impl Iterator<Item = OTelSdkResult>) -> OTelSdkResult {
    results.filter_map(Result::err).last().map_or(Ok(()), Err)
}

impl SpanExporter for ByService {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut parts: Vec<Vec<SpanData>> = self.services.iter().map(|_| Vec::new()).collect();
        for span in batch {
            let i = self.route(&span);
            parts[i].push(span);
        }
        let mut result = Ok(());
        for (part, (_, _, exporter)) in parts.into_iter().zip(&self.services) {
            if !part.is_empty()
                && let Err(e) = exporter.export(part).await
            {
                result = Err(e);
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        every(self.services.iter().map(|(_, _, e)| e.shutdown_with_timeout(timeout)))
    }

    fn force_flush(&self) -> OTelSdkResult {
        every(self.services.iter().map(|(_, _, e)| e.force_flush()))
    }

    fn set_resource(&mut self, resource: &Resource) {
        for (name, _, exporter) in &mut self.services {
            let attributes = resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
            exporter.set_resource(&Resource::builder_empty().with_attributes(attributes).with_service_name(*name).build());
        }
    }
}
