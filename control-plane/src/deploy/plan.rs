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
    /// Drop instances whose node is gone; replacements are placed on the next pass.
    Forget(Vec<String>),
    /// Record why a deployment is not as desired (`None` once it is).
    Reason { api_id: Uuid, reason: Option<String> },
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

/// The steps that bring the instances in line with the deployments.
pub fn plan(w: &World<'_>) -> Vec<Action> {
    let ttl = chrono::Duration::from_std(w.node_ttl).unwrap_or(chrono::Duration::MAX);
    let live: HashSet<Uuid> =
        w.nodes.iter().filter(|n| w.now.signed_duration_since(n.last_heartbeat) <= ttl).map(|n| n.id).collect();
    let mut actions = Vec::new();
    let gone: Vec<String> = w.instances.iter().filter(|i| !live.contains(&i.node_id)).map(|i| i.id.clone()).collect();
    if !gone.is_empty() {
        actions.push(Action::Forget(gone));
    }
    // What stays: instances on live nodes that are still wanted by someone.
    let serving: Vec<&instances::Model> =
        w.instances.iter().filter(|i| live.contains(&i.node_id) && i.state != instances::STOPPING).collect();
    let mut load: HashMap<Uuid, Load> = HashMap::new();
    for i in w.instances.iter().filter(|i| live.contains(&i.node_id)) {
        load.entry(i.node_id).or_default().instances += 1;
    }
    let wanted: HashMap<Uuid, &deployments::Model> =
        w.deployments.iter().filter(|d| d.desired == deployments::RUNNING).map(|d| (d.api_id, d)).collect();
    let mut retire: Vec<String> =
        serving.iter().filter(|i| !wanted.contains_key(&i.api_id)).map(|i| i.id.clone()).collect();

    let mut ordered: Vec<&&deployments::Model> = wanted.values().collect();
    ordered.sort_by_key(|d| d.api_id);
    for d in ordered {
        let mine: Vec<&instances::Model> = serving.iter().copied().filter(|i| i.api_id == d.api_id).collect();
        let (mut current, old): (Vec<&instances::Model>, Vec<&instances::Model>) =
            mine.iter().partition(|i| i.version == d.version);
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
                Err(why) => reason = Some(why),
            }
        } else if current.len() > replicas {
            // Scale down: retire those not serving first, then the newest ids.
            current.sort_by_key(|i| (i.state == instances::RUNNING, std::cmp::Reverse(i.id.clone())));
            retire.extend(current.drain(..current.len() - replicas).map(|i| i.id.clone()));
        }
        // Older versions serve until the desired one runs on every replica.
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
    fn instances_of_dead_nodes_are_forgotten_and_replaced() {
        let api = Uuid::new_v4();
        let nodes = [node("a", 0), node("dead", 60)];
        let rows = [inst("x", api, 1, &nodes[1], instances::RUNNING)];
        let actions = run(&[deployment(api, 1, 1)], &rows, &nodes);
        assert_eq!(actions, [Action::Forget(vec!["x".into()]), Action::Place { api_id: api, version: 1, nodes: vec![nodes[0].id] }]);
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
