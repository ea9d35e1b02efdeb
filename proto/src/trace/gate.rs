//! The global filter of a process that exports traces: the log directives, and besides
//! them the traceable spans of sampled requests.
//!
//! Why global: a per-layer filter that turns a span away dynamically does not stop the
//! registry from making it, so with only the OpenTelemetry layer's filter every request
//! would pay for spans that nothing records.
use tracing::{Metadata, Subscriber, span, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::LevelFilter,
    layer::Context,
};

use super::{sampled_now, traceable};

/// The log filter `logs`, widened to the traceable spans of the crates in `modules`
/// while a sampled request is current. Put it last (outermost) on the subscriber, with
/// the log layer unfiltered beneath it.
#[derive(Debug)]
pub struct Gate {
    logs: EnvFilter,
    modules: Vec<&'static str>,
}

impl Gate {
    /// The gate of `logs` for the spans of `modules`.
    pub fn new(logs: EnvFilter, modules: Vec<&'static str>) -> Self {
        Gate { logs, modules }
    }
}

impl<S: Subscriber> Layer<S> for Gate {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        let logs = Layer::<S>::register_callsite(&self.logs, meta);
        if !logs.is_always() && traceable(meta, &self.modules) { Interest::sometimes() } else { logs }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.logs).map(|l| l.max(LevelFilter::INFO))
    }

    fn enabled(&self, meta: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        (traceable(meta, &self.modules) && sampled_now()) || Layer::<S>::enabled(&self.logs, meta, cx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_new_span(&self.logs, attrs, id, cx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        Layer::<S>::on_record(&self.logs, id, values, cx);
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_enter(&self.logs, id, cx);
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_exit(&self.logs, id, cx);
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        Layer::<S>::on_close(&self.logs, id, cx);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceId;
    use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt};

    use super::{super::Ctx, *};

    /// What is made with the log and OpenTelemetry filters as the cli installs them (logs
    /// at `directives`), in a request sampled or not: an info span of this crate, and a
    /// debug event of another.
    fn made(directives: &str, sampled: Option<bool>) -> (bool, bool) {
        let modules = || vec!["souq_proto"];
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::sink);
        let traces = tracing_subscriber::fmt::layer().with_writer(std::io::sink).with_filter(super::super::otel_filter(modules()));
        let subscriber = tracing_subscriber::registry().with(logs).with(traces).with(Gate::new(EnvFilter::new(directives), modules()));
        tracing::subscriber::with_default(subscriber, || {
            let make = || {
                let span = !tracing::info_span!("request").is_disabled();
                let mut event = false;
                tracing::debug!(target: "h2", seen = { event = true; true }, "a library's event");
                (span, event)
            };
            match sampled {
                None => make(),
                Some(s) => super::super::CURRENT.sync_scope(Ctx::new(TraceId::from(1u128), s, false), make),
            }
        })
    }

    #[test]
    fn an_unsampled_span_is_made_only_for_the_logs() {
        assert_eq!(made("warn", Some(false)), (false, false), "nothing wants them");
        assert_eq!(made("warn", None), (false, false), "outside a request, nothing wants them");
        assert_eq!(made("warn", Some(true)), (true, false), "OpenTelemetry wants a sampled request's span");
        assert_eq!(made("info", Some(false)), (true, false), "the logs want the span");
        assert_eq!(made("debug", Some(false)), (true, true), "the logs want both");
    }
}
