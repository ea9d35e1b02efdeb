//! Placement: picks nodes for work from the registry's view of the nodes: one node for
//! an execute, and nodes for the replicas of a deployed API. Pure, no I/O.
use std::{collections::HashMap, time::Duration};

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
    pub warm: HashMap<Runtime, u32>,
    /// Region label.
    pub region: String,
    /// Memory the node offers to API instances in all, in MiB.
    pub memory_mb: u64,
    /// CPU the node offers to API instances in all, in thousandths of a core.
    pub cpus_milli: u64,
    /// What one instance reserves there.
    pub instance_memory_mb: u64,
    /// What one instance reserves there.
    pub instance_cpus_milli: u64,
    /// False once cordoned by an operator: no new work goes there.
    pub schedulable: bool,
    /// Being drained by an operator: no new work, and its instances move elsewhere.
    pub draining: bool,
}

impl From<crate::entity::nodes::Model> for Candidate {
    fn from(n: crate::entity::nodes::Model) -> Self {
        let warm = serde_json::from_str::<HashMap<String, u32>>(&n.warm).unwrap_or_default();
        Candidate {
            id: n.id,
            name: n.name,
            address: n.address,
            runtimes: n.runtimes.split(',').filter_map(|r| r.parse().ok()).collect(),
            docker_ok: n.docker_ok,
            max_timeout_ms: u64::try_from(n.max_timeout_ms).unwrap_or(0),
            last_heartbeat: n.last_heartbeat,
            warm: warm.into_iter().filter_map(|(k, v)| k.parse().ok().map(|r| (r, v))).collect(),
            region: n.region,
            memory_mb: u64::try_from(n.memory_mb).unwrap_or(0),
            cpus_milli: u64::try_from(n.cpus_milli).unwrap_or(0),
            instance_memory_mb: u64::try_from(n.instance_memory_mb).unwrap_or(0),
            instance_cpus_milli: u64::try_from(n.instance_cpus_milli).unwrap_or(0),
            schedulable: n.schedulable,
            draining: n.draining,
        }
    }
}

impl Candidate {
    /// Whether the node heartbeated within `node_ttl` of `now`; a node that did not is down.
    pub fn live(&self, now: DateTime<Utc>, node_ttl: Duration) -> bool {
        let ttl = chrono::Duration::from_std(node_ttl).unwrap_or(chrono::Duration::MAX);
        now.signed_duration_since(self.last_heartbeat) <= ttl
    }

    /// Whether new work may go to the node: an operator has not cordoned or drained it.
    pub fn takes_work(&self) -> bool {
        self.schedulable && !self.draining
    }

    /// Whether one more instance fits beside `placed` others.
    fn fits(&self, placed: u32) -> bool {
        let n = u64::from(placed) + 1;
        n.saturating_mul(self.instance_memory_mb) <= self.memory_mb && n.saturating_mul(self.instance_cpus_milli) <= self.cpus_milli
    }
}

/// Why no node was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No live node offers the runtime.
    NoNode,
    /// Live nodes offer it, but none can reach its Docker Engine.
    DockerDown,
}

/// Picks a live node that offers `runtime` and takes work (not cordoned or draining), preferring nodes with a warm sandbox of it.
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
    let mut live: Vec<&Candidate> = nodes
        .iter()
        .filter(|n| n.live(now, node_ttl) && n.takes_work())
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

/// The replicas of one API still to be placed.
#[derive(Debug, Clone, Copy)]
pub struct Replicas<'a> {
    /// Their runtime.
    pub runtime: Runtime,
    /// Only nodes with this region label, if set.
    pub region: Option<&'a str>,
    /// How many.
    pub count: usize,
}

/// Instances already placed on a node: in all, and of the API being placed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Every instance on the node.
    pub instances: u32,
    /// Those of the API being placed.
    pub of_api: u32,
}

/// Picks a node for each replica, or none at all: a deployment is never half placed.
/// Nodes must be live, take work (not cordoned or draining), reach Docker, offer the runtime, carry the region label and have
/// memory and CPU free for one more instance. Among them each replica goes to the node
/// with the fewest replicas of this API, then the fewest instances, then the first name,
/// so replicas spread and the same inputs always give the same answer. On refusal the
/// reason says what is missing, for the deployment's status.
pub fn place_replicas(
    nodes: &[Candidate],
    want: &Replicas<'_>,
    load: &HashMap<Uuid, Load>,
    now: DateTime<Utc>,
    node_ttl: Duration,
) -> Result<Vec<Uuid>, String> {
    let runtime = want.runtime;
    let live: Vec<&Candidate> = nodes.iter().filter(|n| n.live(now, node_ttl)).collect();
    let offering: Vec<&Candidate> = live.iter().copied().filter(|n| n.runtimes.contains(&runtime)).collect();
    if offering.is_empty() {
        return Err(format!("no live node offers the {runtime} runtime"));
    }
    let offering: Vec<&Candidate> = offering.into_iter().filter(|n| n.takes_work()).collect();
    if offering.is_empty() {
        return Err(format!("every live node that offers the {runtime} runtime is cordoned or draining"));
    }
    let mut fit: Vec<&Candidate> = offering.iter().copied().filter(|n| want.region.is_none_or(|r| n.region == r)).collect();
    if fit.is_empty() {
        return Err(format!("no live node with the {runtime} runtime is in region {:?}", want.region.unwrap_or_default()));
    }
    fit.retain(|n| n.docker_ok);
    if fit.is_empty() {
        return Err("the Docker Engine of every matching node is unreachable".into());
    }
    fit.sort_by(|a, b| a.name.cmp(&b.name));
    let mut load: Vec<Load> = fit.iter().map(|n| load.get(&n.id).copied().unwrap_or_default()).collect();
    let mut picked = Vec::with_capacity(want.count);
    for _ in 0..want.count {
        let best = (0..fit.len())
            .filter(|&i| fit[i].fits(load[i].instances))
            .min_by_key(|&i| (load[i].of_api, load[i].instances, i));
        let Some(i) = best else {
            return Err(format!(
                "no matching node has memory and CPU free for {} more instance(s) of {} MiB and {} millicores each",
                want.count,
                fit[0].instance_memory_mb,
                fit[0].instance_cpus_milli
            ));
        };
        load[i].instances += 1;
        load[i].of_api += 1;
        picked.push(fit[i].id);
    }
    Ok(picked)
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
            region: "me-central".into(),
            memory_mb: 1024,
            cpus_milli: 2000,
            instance_memory_mb: 256,
            instance_cpus_milli: 500,
            schedulable: true,
            draining: false,
        }
    }

    fn names(nodes: &[Candidate], ids: &[Uuid]) -> Vec<String> {
        ids.iter().map(|id| nodes.iter().find(|n| n.id == *id).map(|n| n.name.clone()).unwrap_or_default()).collect()
    }

    const PY: Replicas<'static> = Replicas { runtime: Runtime::Python, region: None, count: 1 };

    #[test]
    fn replicas_spread_over_nodes_then_double_up() {
        let rt = [Runtime::Python];
        let nodes = [node("b", &rt, true, 0), node("a", &rt, true, 0), node("c", &rt, true, 0)];
        let got = place_replicas(&nodes, &Replicas { count: 4, ..PY }, &HashMap::new(), now(), TTL).unwrap();
        assert_eq!(names(&nodes, &got), ["a", "b", "c", "a"]);
        // An API already on a and b gets its next replica on c.
        let load = HashMap::from([
            (nodes[1].id, Load { instances: 1, of_api: 1 }),
            (nodes[0].id, Load { instances: 1, of_api: 1 }),
        ]);
        assert_eq!(names(&nodes, &place_replicas(&nodes, &PY, &load, now(), TTL).unwrap()), ["c"]);
        // Other APIs' instances break ties: the least loaded node wins.
        let load = HashMap::from([(nodes[1].id, Load { instances: 3, of_api: 0 }), (nodes[0].id, Load { instances: 1, of_api: 0 })]);
        assert_eq!(names(&nodes, &place_replicas(&nodes, &PY, &load, now(), TTL).unwrap()), ["c"]);
    }

    #[test]
    fn replicas_filter_by_runtime_region_liveness_docker_and_room() {
        let mut eu = node("eu", &[Runtime::Python], true, 0);
        eu.region = "eu-west".into();
        let nodes = [node("go-only", &[Runtime::Go], true, 0), node("dead", &[Runtime::Python], true, 60), eu.clone()];
        let in_me = Replicas { region: Some("me-central"), ..PY };
        assert!(place_replicas(&nodes, &in_me, &HashMap::new(), now(), TTL).unwrap_err().contains("region"));
        let in_eu = Replicas { region: Some("eu-west"), ..PY };
        assert_eq!(names(&nodes, &place_replicas(&nodes, &in_eu, &HashMap::new(), now(), TTL).unwrap()), ["eu"]);
        let node_rt = Replicas { runtime: Runtime::Nodejs, ..PY };
        assert!(place_replicas(&nodes, &node_rt, &HashMap::new(), now(), TTL).unwrap_err().contains("nodejs"));
        let down = [node("x", &[Runtime::Python], false, 0)];
        assert!(place_replicas(&down, &PY, &HashMap::new(), now(), TTL).unwrap_err().contains("Docker"));
        // 1024 MiB holds four 256 MiB instances: a fifth is refused, and so is a deployment
        // that needs two where one fits (never half placed).
        let full = HashMap::from([(eu.id, Load { instances: 3, of_api: 0 })]);
        assert_eq!(place_replicas(&nodes, &in_eu, &full, now(), TTL).unwrap().len(), 1);
        let two = Replicas { count: 2, ..in_eu };
        assert!(place_replicas(&nodes, &two, &full, now(), TTL).unwrap_err().contains("2 more"));
        let mut small = eu;
        small.cpus_milli = 400;
        assert!(place_replicas(&[small], &in_eu, &HashMap::new(), now(), TTL).unwrap_err().contains("CPU"));
    }

    #[test]
    fn replica_placement_ignores_input_order() {
        let rt = [Runtime::Python];
        let fwd = [node("x", &rt, true, 0), node("y", &rt, true, 0), node("z", &rt, true, 0)];
        let rev = [fwd[2].clone(), fwd[0].clone(), fwd[1].clone()];
        let want = Replicas { count: 5, ..PY };
        let a = place_replicas(&fwd, &want, &HashMap::new(), now(), TTL).unwrap();
        let b = place_replicas(&rev, &want, &HashMap::new(), now(), TTL).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn cordoned_and_draining_nodes_take_no_work() {
        let rt = [Runtime::Python];
        let mut cordoned = node("a", &rt, true, 0);
        cordoned.schedulable = false;
        let mut draining = node("b", &rt, true, 0);
        draining.draining = true;
        let nodes = [cordoned, draining, node("c", &rt, true, 0)];
        let want = Replicas { count: 3, ..PY };
        assert_eq!(names(&nodes, &place_replicas(&nodes, &want, &HashMap::new(), now(), TTL).unwrap()), ["c", "c", "c"]);
        for spread in 0..4 {
            assert_eq!(place(&nodes, Runtime::Python, now(), TTL, spread).unwrap().name, "c");
        }
        let why = place_replicas(&nodes[..2], &PY, &HashMap::new(), now(), TTL).unwrap_err();
        assert!(why.contains("cordoned or draining"), "{why}");
        assert_eq!(place(&nodes[..2], Runtime::Python, now(), TTL, 0), Err(Refusal::NoNode));
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
