//! Which traces are kept: parent-based by ratio inside Souq, but a public client cannot
//! choose. The edge's HTTP server span, the one span whose parent comes from outside,
//! joins the client's trace and decides by the ratio on its own; every later hop follows.
use std::hash::{BuildHasher, RandomState};

use opentelemetry::{
    Context, KeyValue,
    trace::{Link, SpanKind, TraceContextExt, TraceId},
};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// The attribute only the edge's HTTP server span has.
const HTTP_METHOD: &str = "http.request.method";

/// Parent-based ratio sampling that ignores a client's `sampled` flag.
#[derive(Debug, Clone)]
pub struct Sampling {
    ratio: f64,
    parent_based: Sampler,
    /// Keys the decision on a client's trace id, so a client cannot pick ids that pass.
    salt: RandomState,
}

impl Sampling {
    /// Keeps `ratio` (0 to 1) of the traces.
    pub fn new(ratio: f64) -> Self {
        Sampling { ratio, parent_based: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))), salt: RandomState::new() }
    }
}

impl ShouldSample for Sampling {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let remote = parent.map(|cx| cx.span().span_context().clone()).filter(|sc| sc.is_valid() && sc.is_remote());
        let from_client = *kind == SpanKind::Server && attributes.iter().any(|kv| kv.key.as_str() == HTTP_METHOD);
        let Some(client) = remote.filter(|_| from_client) else {
            return self.parent_based.should_sample(parent, trace_id, name, kind, attributes, links);
        };
        // The top 53 bits of a keyed hash, as a fraction in [0, 1).
        let draw = (self.salt.hash_one(trace_id.to_bytes()) >> 11) as f64 / (1u64 << 53) as f64;
        SamplingResult {
            decision: if draw < self.ratio { SamplingDecision::RecordAndSample } else { SamplingDecision::Drop },
            attributes: Vec::new(),
            trace_state: client.trace_state().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};

    use super::*;

    fn client_parent(sampled: bool) -> Context {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let sc = SpanContext::new(TraceId::from(7u128), SpanId::from(9u64), flags, true, TraceState::default());
        Context::new().with_remote_span_context(sc)
    }

    fn decide(s: &Sampling, parent: &Context, kind: SpanKind, edge: bool, trace: u128) -> SamplingDecision {
        let attributes = if edge { vec![KeyValue::new(HTTP_METHOD, "GET")] } else { Vec::new() };
        s.should_sample(Some(parent), TraceId::from(trace), "span", &kind, &attributes, &[]).decision
    }

    #[test]
    fn a_client_cannot_force_sampling_at_the_edge() {
        let s = Sampling::new(0.0);
        for t in 1..200u128 {
            assert_eq!(decide(&s, &client_parent(true), SpanKind::Server, true, t), SamplingDecision::Drop);
        }
    }

    #[test]
    fn the_edge_keeps_about_the_ratio_of_client_traces() {
        let s = Sampling::new(0.25);
        let kept = (1..=4000u128).filter(|t| decide(&s, &client_parent(true), SpanKind::Server, true, *t) == SamplingDecision::RecordAndSample).count();
        assert!((800..1200).contains(&kept), "{kept} of 4000 kept at 0.25");
        // Ratio 1 keeps a trace the client did not sample.
        assert_eq!(decide(&Sampling::new(1.0), &client_parent(false), SpanKind::Server, true, 5), SamplingDecision::RecordAndSample);
    }

    #[test]
    fn later_hops_follow_their_parent() {
        let s = Sampling::new(0.0);
        assert_eq!(decide(&s, &client_parent(true), SpanKind::Server, false, 3), SamplingDecision::RecordAndSample);
        assert_eq!(decide(&Sampling::new(1.0), &client_parent(false), SpanKind::Server, false, 3), SamplingDecision::Drop);
    }
}
