//! Placement: picks a node for a piece of work from the registry's view of the nodes;
//! pure, no I/O.
use std::time::Duration;

use chrono::{DateTime, Utc};
use souq_proto::Runtime;
use uuid::Uuid;

/// What the scheduler needs to know of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Node id.
    pub id: Uuid,
    /// Unique node name; orders ties.
    pub name: String,
    /// The agent's gRPC address.
    pub address: String,
    /// Runtimes the node has images for.
    pub runtimes: Vec<Runtime>,
    /// Whether the node's Docker Engine answered at its last heartbeat.
    pub docker_ok: bool,
    /// The longest execute the node allows.
    pub max_timeout_ms: u64,
    /// When the node last heartbeated.
    pub last_heartbeat: DateTime<Utc>,
    /// Idle warm sandboxes per runtime.
    pub warm: std::collections::HashMap<Runtime, u32>,
}

/// Why no node was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No live node offers the runtime.
    NoNode,
    /// Live nodes offer it, but none can reach its Docker Engine.
    DockerDown,
}

/// Picks a live node that offers `runtime`, preferring nodes with a warm sandbox of it.
/// `spread` (a well-mixed number derived from the user) spreads users over equal nodes
/// and keeps each user on the same node, where their warm sandbox is; the same inputs
/// always give the same node.
pub fn place(
    nodes: &[Candidate],
    runtime: Runtime,
    now: DateTime<Utc>,
    node_ttl: Duration,
    spread: u64,
) -> Result<&Candidate, Refusal> {
    let ttl = chrono::Duration::from_std(node_ttl).unwrap_or(chrono::Duration::MAX);
    let mut live: Vec<&Candidate> = nodes
        .iter()
        .filter(|n| now.signed_duration_since(n.last_heartbeat) <= ttl)
        .filter(|n| n.runtimes.contains(&runtime))
        .collect();
    if live.is_empty() {
        return Err(Refusal::NoNode);
    }
    live.retain(|n| n.docker_ok);
    if live.is_empty() {
        return Err(Refusal::DockerDown);
    }
    if live.iter().any(|n| n.warm.get(&runtime).is_some_and(|w| *w > 0)) {
        live.retain(|n| n.warm.get(&runtime).is_some_and(|w| *w > 0));
    }
    live.sort_by(|a, b| a.name.cmp(&b.name));
    let i = usize::try_from(spread % live.len() as u64).unwrap_or(0);
    Ok(live[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, runtimes: &[Runtime], docker_ok: bool, age_s: i64) -> Candidate {
        Candidate {
            id: Uuid::new_v4(),
            name: name.into(),
            address: format!("http://{name}:7100"),
            runtimes: runtimes.to_vec(),
            docker_ok,
            max_timeout_ms: 30_000,
            last_heartbeat: now() - chrono::Duration::seconds(age_s),
            warm: Default::default(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    const TTL: Duration = Duration::from_secs(15);

    #[test]
    fn filters_by_runtime_liveness_and_docker() {
        let nodes = [
            node("a", &[Runtime::Python], true, 1),
            node("b", &[Runtime::Go], true, 1),
            node("c", &[Runtime::Nodejs], true, 60),
            node("d", &[Runtime::Nodejs], false, 1),
        ];
        assert_eq!(place(&nodes, Runtime::Python, now(), TTL, 7).unwrap().name, "a");
        assert_eq!(place(&nodes, Runtime::Go, now(), TTL, 7).unwrap().name, "b");
        assert_eq!(place(&nodes, Runtime::Nodejs, now(), TTL, 7), Err(Refusal::DockerDown));
        assert_eq!(place(&nodes[..2], Runtime::Nodejs, now(), TTL, 7), Err(Refusal::NoNode));
        assert_eq!(place(&[], Runtime::Python, now(), TTL, 0), Err(Refusal::NoNode));
    }

    #[test]
    fn prefers_nodes_with_a_warm_sandbox() {
        let rt = [Runtime::Python, Runtime::Go];
        let mut warm = node("w", &rt, true, 0);
        warm.warm.insert(Runtime::Python, 2);
        let nodes = [node("a", &rt, true, 0), warm, node("z", &rt, true, 0)];
        for spread in 0..6 {
            assert_eq!(place(&nodes, Runtime::Python, now(), TTL, spread).unwrap().name, "w");
        }
        // No node is warm for Go: all three share the work.
        let picked: std::collections::BTreeSet<_> =
            (0..6).map(|s| place(&nodes, Runtime::Go, now(), TTL, s).unwrap().name.clone()).collect();
        assert_eq!(picked.len(), 3);
    }

    #[test]
    fn spreads_deterministically_whatever_the_input_order() {
        let rt = [Runtime::Python];
        let fwd = [node("x", &rt, true, 0), node("y", &rt, true, 0)];
        let rev = [fwd[1].clone(), fwd[0].clone()];
        for spread in 0..4 {
            assert_eq!(
                place(&fwd, Runtime::Python, now(), TTL, spread).unwrap().name,
                place(&rev, Runtime::Python, now(), TTL, spread).unwrap().name
            );
        }
        let picked: std::collections::BTreeSet<_> =
            (0..4).map(|s| place(&fwd, Runtime::Python, now(), TTL, s).unwrap().name.clone()).collect();
        assert_eq!(picked.len(), 2);
    }
}
