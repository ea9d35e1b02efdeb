//! The reconciler's decisions: what to place, retire and forget so that the instances
//! match each API's desired state. Pure; `reconciler` carries them out.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use souq_proto::Runtime;
use uuid::Uuid;

use crate::{
    entity::{deployments, instances},
    nodes::scheduler::{self, Candidate, Load, Replicas},
};

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// New instances of a version of an API, one on each node listed.
    Place { api_id: Uuid, version: i32, nodes: Vec<Uuid> },
    /// Take instances out of service: out of the routes now, stopped on their agent next.
    Retire(Vec<String>),
    /// Drop instances whose node is down (`plan` says which): out of the routes, for good.
    Forget(Vec<String>),
    /// Record why a deployment is not as desired (`None` once it is).
    Reason { api_id: Uuid, reason: Option<String> },
}

impl Action {
    /// The action's name in metrics: `place`, `retire`, `forget` or `reason`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Place { .. } => "place",
            Action::Retire(_) => "retire",
            Action::Forget(_) => "forget",
            Action::Reason { .. } => "reason",
        }
    }
}

/// Everything the plan looks at.
pub struct World<'a> {
    /// Every API's desired state.
    pub deployments: &'a [deployments::Model],
    /// The runtime of each API.
    pub runtimes: &'a HashMap<Uuid, Runtime>,
    /// Every instance, whatever its state.
    pub instances: &'a [instances::Model],
    /// Every registered node.
    pub nodes: &'a [Candidate],
    /// The time the plan is made at.
    pub now: DateTime<Utc>,
    /// A node silent for longer is gone.
    pub node_ttl: Duration,
}

/// The instances of down nodes (silent past the TTL, or no longer registered) to drop
/// now: all but the running instances of a wanted API that no live node runs yet. Those
/// keep serving (an agent cut off from the control plane may still be reachable by the
/// edges, which skip a replica that refuses to connect) until a replacement runs.
fn forgotten(w: &World<'_>, live: &HashSet<Uuid>, wanted: &HashMap<Uuid, &deployments::Model>) -> Vec<String> {
    let registered: HashSet<Uuid> = w.nodes.iter().map(|n| n.id).collect();
    let served_live: HashSet<Uuid> = w
        .instances
        .iter()
        .filter(|i| live.contains(&i.node_id) && i.state == instances::RUNNING)
        .map(|i| i.api_id)
        .collect();
    let kept = |i: &instances::Model| {
        registered.contains(&i.node_id)
            && i.state == instances::RUNNING
            && wanted.contains_key(&i.api_id)
            && !served_live.contains(&i.api_id)
    };
    w.instances.iter().filter(|i| !live.contains(&i.node_id) && !kept(i)).map(|i| i.id.clone()).collect()
}

/// The steps that bring the instances in line with the deployments.
pub fn plan(w: &World<'_>) -> Vec<Action> {
    let live: HashSet<Uuid> = w.nodes.iter().filter(|n| n.live(w.now, w.node_ttl)).map(|n| n.id).collect();
    let draining: HashMap<Uuid, &str> =
        w.nodes.iter().filter(|n| n.draining && live.contains(&n.id)).map(|n| (n.id, n.name.as_str())).collect();
    let wanted: HashMap<Uuid, &deployments::Model> =
        w.deployments.iter().filter(|d| d.desired == deployments::RUNNING).map(|d| (d.api_id, d)).collect();
    let mut actions = Vec::new();
    let gone = forgotten(w, &live, &wanted);
    if !gone.is_empty() {
        actions.push(Action::Forget(gone));
    }
    // What serves: instances on live nodes that are not being stopped. Those of down nodes
    // do not count, so their replacements are placed at once.
    let serving: Vec<&instances::Model> =
        w.instances.iter().filter(|i| live.contains(&i.node_id) && i.state != instances::STOPPING).collect();
    let mut load: HashMap<Uuid, Load> = HashMap::new();
    for i in w.instances.iter().filter(|i| live.contains(&i.node_id)) {
        load.entry(i.node_id).or_default().instances += 1;
    }
    let mut retire: Vec<String> =
        serving.iter().filter(|i| !wanted.contains_key(&i.api_id)).map(|i| i.id.clone()).collect();

    let mut ordered: Vec<&&deployments::Model> = wanted.values().collect();
    ordered.sort_by_key(|d| d.api_id);
    for d in ordered {
        let mine: Vec<&instances::Model> = serving.iter().copied().filter(|i| i.api_id == d.api_id).collect();
        // Instances on a draining node count as an older version's: they serve until their
        // replacements elsewhere run, so a drain never lowers the number running.
        let (mut current, old): (Vec<&instances::Model>, Vec<&instances::Model>) =
            mine.iter().partition(|i| i.version == d.version && !draining.contains_key(&i.node_id));
        let replicas = usize::try_from(d.replicas).unwrap_or(0);
        let mut reason = None;
        if current.iter().any(|i| i.state == instances::FAILED) {
            // The handler does not load: nothing more to start until a new deploy.
        } else if current.len() < replicas {
            let Some(runtime) = w.runtimes.get(&d.api_id).copied() else { continue };
            let mut api_load = load.clone();
            for l in api_load.values_mut() {
                l.of_api = 0;
            }
            for i in &current {
                api_load.entry(i.node_id).or_default().of_api += 1;
            }
            let want = Replicas { runtime, region: d.region.as_deref(), count: replicas - current.len() };
            match scheduler::place_replicas(w.nodes, &want, &api_load, w.now, w.node_ttl) {
                Ok(nodes) => {
                    for n in &nodes {
                        load.entry(*n).or_default().instances += 1;
                    }
                    actions.push(Action::Place { api_id: d.api_id, version: d.version, nodes });
                }
                Err(why) => {
                    reason = Some(match drain_blocked(&old, &draining) {
                        Some(node) => format!("cannot drain node {node}: {why}"),
                        None => why,
                    });
                }
            }
        } else if current.len() > replicas {
            // Scale down: retire those not serving first, then the newest ids.
            current.sort_by_key(|i| (i.state == instances::RUNNING, std::cmp::Reverse(i.id.clone())));
            retire.extend(current.drain(..current.len() - replicas).map(|i| i.id.clone()));
        }
        // Older versions, and drained instances, serve until the desired version runs on
        // every replica elsewhere.
        let ready = current.iter().filter(|i| i.state == instances::RUNNING).count() >= replicas;
        if ready {
            retire.extend(old.iter().map(|i| i.id.clone()));
        }
        if d.reason != reason {
            actions.push(Action::Reason { api_id: d.api_id, reason });
        }
    }
    if !retire.is_empty() {
        retire.sort();
        actions.push(Action::Retire(retire));
    }
    actions
}

/// The first draining node (by name) one of `old` is on, if any.
fn drain_blocked<'a>(old: &[&instances::Model], draining: &HashMap<Uuid, &'a str>) -> Option<&'a str> {
    old.iter().filter_map(|i| draining.get(&i.node_id).copied()).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, age_s: i64) -> Candidate {
        Candidate {
            id: Uuid::new_v4(),
            name: name.into(),
            address: format!("http://{name}:7100"),
            runtimes: vec![Runtime::Python],
            docker_ok: true,
            max_timeout_ms: 30_000,
            last_heartbeat: now() - chrono::Duration::seconds(age_s),
            warm: HashMap::new(),
            region: String::new(),
            memory_mb: 4096,
            cpus_milli: 8000,
            instance_memory_mb: 256,
            instance_cpus_milli: 500,
            schedulable: true,
            draining: false,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn deployment(api: Uuid, version: i32, replicas: i32) -> deployments::Model {
        deployments::Model {
            api_id: api,
            version,
            replicas,
            region: None,
            desired: deployments::RUNNING.into(),
            reason: None,
            updated_at: now(),
        }
    }

    fn inst(id: &str, api: Uuid, version: i32, node: &Candidate, state: &str) -> instances::Model {
        instances::Model {
            id: id.into(),
            api_id: api,
            version,
            node_id: node.id,
            state: state.into(),
            error: None,
            restarts: 0,
            created_at: now(),
            updated_at: now(),
        }
    }

    fn run(d: &[deployments::Model], i: &[instances::Model], n: &[Candidate]) -> Vec<Action> {
        let runtimes: HashMap<Uuid, Runtime> = d.iter().map(|d| (d.api_id, Runtime::Python)).collect();
        plan(&World { deployments: d, runtimes: &runtimes, instances: i, nodes: n, now: now(), node_ttl: Duration::from_secs(15) })
    }

    #[test]
    fn places_missing_replicas_spread_over_nodes() {
        let api = Uuid::new_v4();
        let nodes = [node("a", 0), node("b", 0)];
        let have = [inst("i1", api, 1, &nodes[0], instances::RUNNING)];
        let actions = run(&[deployment(api, 1, 2)], &have, &nodes);
        assert_eq!(actions, [Action::Place { api_id: api, version: 1, nodes: vec![nodes[1].id] }]);
        // Converged: nothing to do.
        let have = [have[0].clone(), inst("i2", api, 1, &nodes[1], instances::RUNNING)];
        assert!(run(&[deployment(api, 1, 2)], &have, &nodes).is_empty());
    }

    #[test]
    fn a_new_version_replaces_the_old_only_once_it_runs() {
        let api = Uuid::new_v4();
        let nodes = [node("a", 0)];
        let old = inst("old", api, 1, &nodes[0], instances::RUNNING);
        let actions = run(&[deployment(api, 2, 1)], std::slice::from_ref(&old), &nodes);
        assert_eq!(actions, [Action::Place { api_id: api, version: 2, nodes: vec![nodes[0].id] }]);
        let starting = [old.clone(), inst("new", api, 2, &nodes[0], instances::STARTING)];
        assert!(run(&[deployment(api, 2, 1)], &starting, &nodes).is_empty());
        let ready = [old, inst("new", api, 2, &nodes[0], instances::RUNNING)];
        assert_eq!(run(&[deployment(api, 2, 1)], &ready, &nodes), [Action::Retire(vec!["old".into()])]);
    }

    #[test]
    fn a_failed_load_keeps_the_old_version_and_starts_nothing() {
        let api = Uuid::new_v4();
        let nodes = [node("a", 0)];
        let rows = [inst("old", api, 1, &nodes[0], instances::RUNNING), inst("bad", api, 2, &nodes[0], instances::FAILED)];
        assert!(run(&[deployment(api, 2, 2)], &rows, &nodes).is_empty());
    }

    #[test]
    fn a_down_node_with_another_running_replica_is_forgotten_and_replaced_at_once() {
        let api = Uuid::new_v4();
        let nodes = [node("a", 0), node("b", 0), node("dead", 60)];
        let rows = [inst("x", api, 1, &nodes[2], instances::RUNNING), inst("y", api, 1, &nodes[0], instances::RUNNING)];
        let actions = run(&[deployment(api, 1, 2)], &rows, &nodes);
        let place = Action::Place { api_id: api, version: 1, nodes: vec![nodes[1].id] };
        assert_eq!(actions, [Action::Forget(vec!["x".into()]), place]);
    }

    #[test]
    fn a_down_node_keeps_serving_until_a_replacement_runs() {
        let api = Uuid::new_v4();
        let nodes = [node("a", 0), node("dead", 60)];
        let d = [deployment(api, 1, 1)];
        // No other replica runs: the down one stays (in the routes); one is placed at once.
        let rows = [inst("x", api, 1, &nodes[1], instances::RUNNING)];
        assert_eq!(run(&d, &rows, &nodes), [Action::Place { api_id: api, version: 1, nodes: vec![nodes[0].id] }]);
        // The replacement starts: the down one still serves.
        let starting = [rows[0].clone(), inst("r", api, 1, &nodes[0], instances::STARTING)];
        assert!(run(&d, &starting, &nodes).is_empty());
        // It runs: the down one is forgotten.
        let replaced = [rows[0].clone(), inst("r", api, 1, &nodes[0], instances::RUNNING)];
        assert_eq!(run(&d, &replaced, &nodes), [Action::Forget(vec!["x".into()])]);
    }

    #[test]
    fn what_a_down_node_cannot_serve_is_forgotten_at_once() {
        let api = Uuid::new_v4();
        let nodes = [node("a", 0), node("dead", 60)];
        let rows = [inst("x", api, 1, &nodes[1], instances::RUNNING)];
        // The deployment no longer wants it.
        let mut stopped = deployment(api, 1, 1);
        stopped.desired = deployments::STOPPED.into();
        assert_eq!(run(&[stopped], &rows, &nodes), [Action::Forget(vec!["x".into()])]);
        // It was not running.
        let starting = [inst("s", api, 1, &nodes[1], instances::STARTING)];
        assert_eq!(run(&[deployment(api, 1, 1)], &starting, &nodes)[0], Action::Forget(vec!["s".into()]));
        // Its node is no longer registered: there is no address to reach it at.
        let unknown = [inst("u", api, 1, &node("unregistered", 0), instances::RUNNING)];
        assert_eq!(run(&[deployment(api, 1, 1)], &unknown, &nodes)[0], Action::Forget(vec!["u".into()]));
    }

    #[test]
    fn a_drain_retires_each_instance_only_once_its_replacement_runs() {
        let api = Uuid::new_v4();
        let mut nodes = [node("a", 0), node("b", 0), node("c", 0)];
        nodes[0].draining = true;
        let d = [deployment(api, 1, 2)];
        let rows = [inst("on-a", api, 1, &nodes[0], instances::RUNNING), inst("on-b", api, 1, &nodes[1], instances::RUNNING)];
        assert_eq!(run(&d, &rows, &nodes), [Action::Place { api_id: api, version: 1, nodes: vec![nodes[2].id] }]);
        let starting = [rows[0].clone(), rows[1].clone(), inst("on-c", api, 1, &nodes[2], instances::STARTING)];
        assert!(run(&d, &starting, &nodes).is_empty());
        let running = [rows[0].clone(), rows[1].clone(), inst("on-c", api, 1, &nodes[2], instances::RUNNING)];
        assert_eq!(run(&d, &running, &nodes), [Action::Retire(vec!["on-a".into()])]);
    }

    #[test]
    fn a_drain_with_nowhere_to_go_keeps_the_instances_and_says_why() {
        let api = Uuid::new_v4();
        let mut nodes = [node("a", 0), node("b", 0)];
        nodes[0].draining = true;
        nodes[1].schedulable = false;
        let rows = [inst("on-a", api, 1, &nodes[0], instances::RUNNING)];
        let actions = run(&[deployment(api, 1, 1)], &rows, &nodes);
        let said = |r: &str| r.starts_with("cannot drain node a: ") && r.contains("cordoned or draining");
        assert!(matches!(&actions[..], [Action::Reason { reason: Some(r), .. }] if said(r)), "{actions:?}");
    }

    #[test]
    fn scales_down_and_stops_what_is_not_wanted() {
        let api = Uuid::new_v4();
        let gone_api = Uuid::new_v4();
        let nodes = [node("a", 0)];
        let rows = [
            inst("r1", api, 1, &nodes[0], instances::RUNNING),
            inst("r2", api, 1, &nodes[0], instances::STARTING),
            inst("r3", api, 1, &nodes[0], instances::RUNNING),
            inst("orphan", gone_api, 1, &nodes[0], instances::RUNNING),
        ];
        let actions = run(&[deployment(api, 1, 1)], &rows, &nodes);
        assert_eq!(actions, [Action::Retire(vec!["orphan".into(), "r2".into(), "r3".into()])]);
        let mut stopped = deployment(api, 1, 1);
        stopped.desired = deployments::STOPPED.into();
        let actions = run(&[stopped], &rows[..1], &nodes);
        assert_eq!(actions, [Action::Retire(vec!["r1".into()])]);
    }

    #[test]
    fn no_room_leaves_a_reason_and_places_nothing() {
        let api = Uuid::new_v4();
        let mut small = node("a", 0);
        small.memory_mb = 256;
        let actions = run(&[deployment(api, 1, 2)], &[], &[small]);
        assert!(matches!(&actions[..], [Action::Reason { reason: Some(r), .. }] if r.contains("memory")));
    }
}
