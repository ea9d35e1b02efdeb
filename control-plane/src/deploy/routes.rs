//! The data path's routes: which agents serve each API, built from the database and
//! published for the edges to watch (`Routes.WatchRoutes`), so calls skip the control
//! plane.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use souq_proto::routes::{Backend, Route, RouteTable};
use uuid::Uuid;

use super::Deployer;
use crate::{
    entity::{apis, instances, nodes},
    error::Result,
};

/// The route table: every API, with its running instances on live nodes as backends. An
/// API that no live node runs keeps those of its down nodes that the reconciler has not
/// forgotten: an agent cut off from the control plane may still serve the edges (which
/// skip a replica that refuses to connect) until a replacement runs.
pub fn build(
    apis: &[apis::Model],
    running: &[instances::Model],
    nodes: &[nodes::Model],
    now: DateTime<Utc>,
    node_ttl: Duration,
    timeout_ms: u64,
) -> Vec<Route> {
    let ttl = chrono::Duration::from_std(node_ttl).unwrap_or(chrono::Duration::MAX);
    let known: HashMap<Uuid, (&nodes::Model, bool)> =
        nodes.iter().map(|n| (n.id, (n, now.signed_duration_since(n.last_heartbeat) <= ttl))).collect();
    let running: Vec<(&instances::Model, &nodes::Model, bool)> = running
        .iter()
        .filter(|i| i.state == instances::RUNNING)
        .filter_map(|i| known.get(&i.node_id).map(|(n, live)| (i, *n, *live)))
        .collect();
    let served_live: HashSet<Uuid> = running.iter().filter(|(_, _, live)| *live).map(|(i, _, _)| i.api_id).collect();
    let mut backends: HashMap<Uuid, Vec<Backend>> = HashMap::new();
    for (i, n, live) in running {
        if live || !served_live.contains(&i.api_id) {
            backends.entry(i.api_id).or_default().push(Backend {
                instance_id: i.id.clone(),
                agent_addr: n.address.clone(),
                node: n.name.clone(),
                version: u32::try_from(i.version).unwrap_or(0),
            });
        }
    }
    let mut routes: Vec<Route> = apis
        .iter()
        .map(|a| {
            let mut b = backends.remove(&a.id).unwrap_or_default();
            b.sort_by(|x, y| x.instance_id.cmp(&y.instance_id));
            Route {
                slug: a.slug.clone(),
                api_id: a.id.to_string(),
                owner_id: a.owner_id.to_string(),
                public: a.public,
                timeout_ms,
                backends: b,
            }
        })
        .collect();
    routes.sort_by(|x, y| x.slug.cmp(&y.slug));
    routes
}

/// Rebuilds the table from the database and publishes it if it changed.
pub(crate) async fn refresh(deployer: &Deployer) -> Result<()> {
    let db = &deployer.db;
    let apis = apis::Entity::find().all(db).await?;
    let running = instances::Entity::find().filter(instances::Column::State.eq(instances::RUNNING)).all(db).await?;
    let nodes = nodes::Entity::find().all(db).await?;
    let routes = build(&apis, &running, &nodes, Utc::now(), deployer.nodes.node_ttl, deployer.call_timeout_ms());
    deployer.routes.send_if_modified(|table| {
        if table.routes == routes {
            return false;
        }
        *table = Arc::new(RouteTable { generation: table.generation + 1, routes });
        true
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, age_s: i64, now: DateTime<Utc>) -> nodes::Model {
        nodes::Model::sample(name, &format!("http://{name}:7100"), now - chrono::Duration::seconds(age_s))
    }

    fn api(slug: &str) -> apis::Model {
        apis::Model {
            id: Uuid::new_v4(),
            owner_id: Uuid::new_v4(),
            name: slug.into(),
            slug: slug.into(),
            runtime: "python".into(),
            description: String::new(),
            public: false,
            latest_version: 1,
            created_at: Utc::now(),
        }
    }

    fn inst(id: &str, api: &apis::Model, node: &nodes::Model) -> instances::Model {
        instances::Model {
            id: id.into(),
            api_id: api.id,
            version: 1,
            node_id: node.id,
            state: instances::RUNNING.into(),
            error: None,
            restarts: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_down_node_serves_only_what_no_live_node_serves() {
        let now = Utc::now();
        let nodes = [node("up", 0, now), node("down", 60, now)];
        let (both, only_down) = (api("both"), api("only-down"));
        let rows = [inst("b-up", &both, &nodes[0]), inst("b-down", &both, &nodes[1]), inst("d-down", &only_down, &nodes[1])];
        let routes = build(&[both, only_down], &rows, &nodes, now, Duration::from_secs(8), 1000);
        let ids = |r: &Route| r.backends.iter().map(|b| b.instance_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&routes[0]), ["b-up"]);
        assert_eq!(ids(&routes[1]), ["d-down"]);
        assert_eq!(routes[1].backends[0].agent_addr, "http://down:7100");
    }
}
