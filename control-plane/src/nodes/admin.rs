//! Operators' hold on the nodes: the list with each node's state, and the cordon, drain
//! and uncordon flags the scheduler and the deploy plan read. A cordoned node takes no new
//! work; a draining one also has its instances moved (by the plan, which retires each once
//! its replacement runs); uncordon clears both.
use super::Nodes;
use crate::{
    entity::nodes,
    error::{Error, Result},
};
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use souq_proto::{Kind, nodes::NodeInfo};
use tracing::info;

/// Most nodes one list returns; a cluster is far smaller.
pub const MAX_LISTED: u64 = 10_000;

/// What an operator asks of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No new work.
    Cordon,
    /// No new work, and move what runs there.
    Drain,
    /// Take work again.
    Uncordon,
}

impl Change {
    /// The flags after the change: `(schedulable, draining)`.
    fn flags(self) -> (bool, bool) {
        match self {
            Change::Cordon => (false, false),
            Change::Drain => (false, true),
            Change::Uncordon => (true, false),
        }
    }
}

/// A node's wire form, with the number of instance rows it holds: `up` when it heartbeated within `node_ttl` of `now`.
pub fn info(n: &nodes::Model, instances: u32, now: DateTime<Utc>, node_ttl: std::time::Duration) -> NodeInfo {
    let ttl = chrono::Duration::from_std(node_ttl).unwrap_or(chrono::Duration::MAX);
    let up = now.signed_duration_since(n.last_heartbeat) <= ttl;
    NodeInfo {
        name: n.name.clone(),
        id: n.id.to_string(),
        region: n.region.clone(),
        address: n.address.clone(),
        state: if up { "up" } else { "down" }.into(),
        schedulable: n.schedulable && !n.draining,
        draining: n.draining,
        instances,
        docker_ok: n.docker_ok,
        last_heartbeat: n.last_heartbeat.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

/// Every registered node, by name.
pub(crate) async fn list(fleet: &Nodes) -> Result<Vec<nodes::Model>> {
    Ok(nodes::Entity::find().order_by_asc(nodes::Column::Name).limit(MAX_LISTED).all(&fleet.db).await?)
}

/// Applies `change` to the node named `name`; 404 when there is none.
pub(crate) async fn set(fleet: &Nodes, name: &str, change: Change) -> Result<nodes::Model> {
    let not_found = || Error::kind(Kind::NotFound, format!("no node is named {name:?}"));
    if name.is_empty() || name.len() > 128 {
        return Err(not_found());
    }
    let row = nodes::Entity::find().filter(nodes::Column::Name.eq(name)).one(&fleet.db).await?.ok_or_else(not_found)?;
    let (schedulable, draining) = change.flags();
    let row = if (row.schedulable, row.draining) == (schedulable, draining) {
        row
    } else {
        let mut am = row.into_active_model();
        am.schedulable = Set(schedulable);
        am.draining = Set(draining);
        am.update(&fleet.db).await?
    };
    info!(node = %row.name, ?change, "node changed by an operator");
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_down_past_the_ttl_and_a_drain_is_not_schedulable() {
        let now = Utc::now();
        let mut n = nodes::Model {
            region: "r".into(),
            ..nodes::Model::sample("n1", "http://n1:7100", now - chrono::Duration::seconds(3))
        };
        let ttl = std::time::Duration::from_secs(8);
        let up = info(&n, 2, now, ttl);
        assert_eq!((up.state.as_str(), up.schedulable, up.draining, up.instances), ("up", true, false, 2));
        assert!(DateTime::parse_from_rfc3339(&up.last_heartbeat).is_ok(), "{}", up.last_heartbeat);
        n.last_heartbeat = now - chrono::Duration::seconds(9);
        (n.schedulable, n.draining) = Change::Drain.flags();
        let down = info(&n, 0, now, ttl);
        assert_eq!((down.state.as_str(), down.schedulable, down.draining), ("down", false, true));
        assert_eq!(Change::Uncordon.flags(), (true, false));
        assert_eq!(Change::Cordon.flags(), (false, false));
    }
}
