//! The data path's routes: which agents serve each API, built from the database and
//! published for the edges to watch (`Routes.WatchRoutes`), so calls skip the control
//! plane.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use souq_proto::routes::{Backend, Route, RouteTable};
use uuid::Uuid;

use super::Deployer;
use crate::{
    entity::{apis, instances, nodes},
    error::Result,
};

/// The route table: every API, with the running instances on live nodes as backends.
pub fn build(
    apis: &[apis::Model],
    running: &[instances::Model],
    nodes: &[nodes::Model],
    now: DateTime<Utc>,
    node_ttl: Duration,
    timeout_ms: u64,
) -> Vec<Route> {
    let ttl = chrono::Duration::from_std(node_ttl).unwrap_or(chrono::Duration::MAX);
    let live: HashMap<Uuid, &nodes::Model> =
        nodes.iter().filter(|n| now.signed_duration_since(n.last_heartbeat) <= ttl).map(|n| (n.id, n)).collect();
    let mut backends: HashMap<Uuid, Vec<Backend>> = HashMap::new();
    for i in running.iter().filter(|i| i.state == instances::RUNNING) {
        if let Some(n) = live.get(&i.node_id) {
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
