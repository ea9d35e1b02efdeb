//! The control plane's Prometheus metrics: gRPC requests, reconciler actions, leadership,
//! and gauges of instances, nodes and the mail outbox refreshed from the database.
use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// gRPC requests answered, by method and code (`_total` is appended on exposition).
pub const GRPC_REQUESTS: &str = "souq_control_plane_grpc_requests";
/// gRPC request latency in seconds, by method: until the response's headers.
pub const GRPC_REQUEST_DURATION: &str = "souq_control_plane_grpc_request_duration_seconds";
/// Reconciler actions carried out, by action and result (`_total` is appended).
pub const RECONCILER_ACTIONS: &str = "souq_control_plane_reconciler_actions";
/// Reconciler action latency in seconds, by action.
pub const RECONCILER_ACTION_DURATION: &str = "souq_control_plane_reconciler_action_duration_seconds";
/// Instance rows by state.
pub const INSTANCES: &str = "souq_control_plane_instances";
/// Registered nodes by state: ready, cordoned, draining, down.
pub const NODES: &str = "souq_control_plane_nodes";
/// 1 while this replica leads, else 0.
pub const LEADER: &str = "souq_control_plane_leader";
/// The highest lease epoch this replica has read.
pub const LEADER_EPOCH: &str = "souq_control_plane_leader_epoch";
/// Mails waiting to be sent (neither sent nor given up on).
pub const MAIL_OUTBOX_DEPTH: &str = "souq_control_plane_mail_outbox_depth";
/// Age in seconds of the oldest mail waiting to be sent; 0 when none waits.
pub const MAIL_OUTBOX_OLDEST_AGE: &str = "souq_control_plane_mail_outbox_oldest_age_seconds";
/// Failed refreshes of the database gauges (`_total` is appended).
pub const GAUGE_REFRESH_ERRORS: &str = "souq_control_plane_gauge_refresh_errors";

/// Labels of a gRPC request: its full method path and its gRPC code name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// `/souq.x.v1.Svc/Method`, or `unknown`.
    pub method: String,
    /// `OK`, `NotFound`, `Unauthenticated`…
    pub code: &'static str,
}

/// The method label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `/souq.x.v1.Svc/Method`, or `unknown`.
    pub method: String,
}

/// Labels of a reconciler action: what, and whether it succeeded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `pass`, `place`, `retire`, `forget`, `reason`, `redeploy_lost`, `deploy`, `stop`.
    pub action: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The action label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionOnly {
    /// See [`ActionLabels::action`].
    pub action: &'static str,
}

/// A state label (instances, nodes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// One of a fixed set of states.
    pub state: &'static str,
}

/// A histogram family with [`souq_proto::metrics::LATENCY_BUCKETS`].
type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every control-plane metric. `Default` gives fresh, unregistered families (tests);
/// [`Metrics::register`] registers them.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// See [`GRPC_REQUESTS`].
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// See [`GRPC_REQUEST_DURATION`].
    pub grpc_duration: Latencies<MethodLabels>,
    /// See [`RECONCILER_ACTIONS`].
    pub reconciler_actions: Family<ActionLabels, Counter>,
    /// See [`RECONCILER_ACTION_DURATION`].
    pub reconciler_duration: Latencies<ActionOnly>,
    /// See [`INSTANCES`].
    pub instances: Family<StateLabels, Gauge>,
    /// See [`NODES`].
    pub nodes: Family<StateLabels, Gauge>,
    /// See [`LEADER`].
    pub leader: Gauge,
    /// See [`LEADER_EPOCH`].
    pub leader_epoch: Gauge,
    /// See [`MAIL_OUTBOX_DEPTH`].
    pub mail_outbox_depth: Gauge,
    /// See [`MAIL_OUTBOX_OLDEST_AGE`].
    pub mail_outbox_oldest_age: Gauge<f64, AtomicU64>,
    /// See [`GAUGE_REFRESH_ERRORS`].
    pub gauge_refresh_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let latencies = souq_proto::metrics::latency_histogram as fn() -> Histogram;
        Metrics {
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(latencies),
            reconciler_actions: Family::default(),
            reconciler_duration: Family::new_with_constructor(latencies),
            instances: Family::default(),
            nodes: Family::default(),
            leader: Gauge::default(),
            leader_epoch: Gauge::default(),
            mail_outbox_depth: Gauge::default(),
            mail_outbox_oldest_age: Gauge::default(),
            gauge_refresh_errors: Counter::default(),
        }
    }
}

impl Metrics {
    /// Fresh families, registered in `registry`; the returned handles feed them.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(GRPC_REQUESTS, "gRPC requests answered, by method and code", m.grpc_requests.clone());
        registry.register(
            GRPC_REQUEST_DURATION,
            "gRPC request latency in seconds until the response starts, by method",
            m.grpc_duration.clone(),
        );
        registry.register(RECONCILER_ACTIONS, "Reconciler actions, by action and result", m.reconciler_actions.clone());
        registry.register(RECONCILER_ACTION_DURATION, "Reconciler action latency in seconds, by action", m.reconciler_duration.clone());
        registry.register(INSTANCES, "Instances by state, from the database", m.instances.clone());
        registry.register(NODES, "Registered nodes by state (ready, cordoned, draining, down), from the database", m.nodes.clone());
        registry.register(LEADER, "1 while this replica leads (reconciles), else 0", m.leader.clone());
        registry.register(LEADER_EPOCH, "The highest leader lease epoch this replica has read", m.leader_epoch.clone());
        registry.register(MAIL_OUTBOX_DEPTH, "Mails waiting to be sent", m.mail_outbox_depth.clone());
        registry.register(
            MAIL_OUTBOX_OLDEST_AGE,
            "Age in seconds of the oldest mail waiting to be sent (0 when none)",
            m.mail_outbox_oldest_age.clone(),
        );
        registry.register(GAUGE_REFRESH_ERRORS, "Failed refreshes of the database gauges", m.gauge_refresh_errors.clone());
        m
    }

    /// Counts one gRPC request and its latency.
    pub fn grpc(&self, method: String, code: &'static str, took: Duration) {
        self.grpc_duration.get_or_create(&MethodLabels { method: method.clone() }).observe(took.as_secs_f64());
        self.grpc_requests.get_or_create(&GrpcLabels { method, code }).inc();
    }

    /// Counts one reconciler action, its result and its latency.
    pub fn action(&self, action: &'static str, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "error" };
        self.reconciler_actions.get_or_create(&ActionLabels { action, result }).inc();
        self.reconciler_duration.get_or_create(&ActionOnly { action }).observe(took.as_secs_f64());
    }

    /// Records whether this replica leads.
    pub fn set_leading(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records the highest epoch read.
    pub fn set_epoch(&self, epoch: u64) {
        self.leader_epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_under_its_name() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.grpc("/souq.accounts.v1.Accounts/Login".into(), "OK", Duration::from_millis(3));
        m.action("place", true, Duration::from_millis(1));
        m.instances.get_or_create(&StateLabels { state: "running" }).set(2);
        m.nodes.get_or_create(&StateLabels { state: "ready" }).set(1);
        m.set_leading(true);
        m.set_epoch(7);
        m.mail_outbox_oldest_age.set(1.5);
        let text = souq_proto::metrics::encode(&registry);
        for line in [
            "souq_control_plane_grpc_requests_total{method=\"/souq.accounts.v1.Accounts/Login\",code=\"OK\"} 1",
            "souq_control_plane_grpc_request_duration_seconds_count{method=\"/souq.accounts.v1.Accounts/Login\"} 1",
            "souq_control_plane_reconciler_actions_total{action=\"place\",result=\"ok\"} 1",
            "souq_control_plane_reconciler_action_duration_seconds_count{action=\"place\"} 1",
            "souq_control_plane_instances{state=\"running\"} 2",
            "souq_control_plane_nodes{state=\"ready\"} 1",
            "souq_control_plane_leader 1",
            "souq_control_plane_leader_epoch 7",
            "souq_control_plane_mail_outbox_depth 0",
            "souq_control_plane_mail_outbox_oldest_age_seconds 1.5",
            "souq_control_plane_gauge_refresh_errors_total 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
