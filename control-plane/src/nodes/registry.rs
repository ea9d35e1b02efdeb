//! The node registry: agents register with their address, runtimes and capacity, and
//! heartbeat their capacity and Docker health. A node that registers again keeps its id,
//! and its identity: the first agent to register a name (by its certificate's key) holds
//! it, and no other may register or heartbeat as that node.
use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::{NotSet, Set}, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
use souq_proto::{
    Kind, Runtime,
    registry::{HeartbeatRequest, RegisterRequest},
};
use tracing::info;
use uuid::Uuid;

use super::Nodes;
use crate::{
    entity::nodes,
    error::{Error, Result},
};

/// The warm levels a node reported, as stored: only known runtimes, as JSON.
fn warm_json(warm: &HashMap<String, u32>) -> String {
    let known: BTreeMap<&str, u32> = warm.iter().filter_map(|(k, v)| k.parse::<Runtime>().ok().map(|r| (r.as_str(), *v))).collect();
    serde_json::to_string(&known).unwrap_or_else(|_| "{}".into())
}

fn validate(req: &RegisterRequest) -> Result<Vec<Runtime>> {
    let name_ok = !req.node_name.is_empty()
        && req.node_name.len() <= 128
        && req.node_name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(Error::invalid("node_name", "1 to 128 characters of [A-Za-z0-9._-]"));
    }
    let addr = &req.advertise_addr;
    if !(addr.starts_with("http://") || addr.starts_with("https://")) || addr.len() > 256 {
        return Err(Error::invalid("advertise_addr", "must be an http:// or https:// URL"));
    }
    if req.region.len() > 64 {
        return Err(Error::invalid("region", "at most 64 characters"));
    }
    req.runtimes.iter().map(|r| r.parse::<Runtime>().map_err(|e| Error::invalid("runtimes", e.to_string()))).collect()
}

impl Nodes {
    /// The heartbeat interval agents are told, in milliseconds.
    pub(crate) fn heartbeat_interval_ms(&self) -> u32 {
        u32::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u32::MAX)
    }
}

/// Refuses a caller whose identity is not the one `row` is pinned to. In plain text
/// (`caller` is `None`) nothing is pinned, and nothing checked.
fn check_pin(row: &nodes::Model, caller: Option<&str>) -> Result<()> {
    match (row.identity.as_deref(), caller) {
        (Some(pinned), Some(caller)) if pinned != caller => Err(Error::kind(
            Kind::Forbidden,
            format!("node {} is registered to another agent identity", row.name),
        )),
        _ => Ok(()),
    }
}

/// Registers a node, or registers it again after a restart (it keeps its id); returns its
/// row. A node that moved to a new address loses the client of its old one. The first
/// registration with an `identity` pins it; another identity is refused the name.
pub(crate) async fn register(fleet: &Nodes, req: &RegisterRequest, identity: Option<String>) -> Result<nodes::Model> {
    let runtimes = validate(req)?;
    let db = &fleet.db;
    let now = Utc::now();
    let cap = req.capacity.clone().unwrap_or_default();
    let existing = nodes::Entity::find().filter(nodes::Column::Name.eq(&req.node_name)).one(db).await?;
    if let Some(old) = &existing {
        check_pin(old, identity.as_deref())?;
    }
    let identity = existing.as_ref().and_then(|n| n.identity.clone()).or(identity);
    let runtimes = runtimes.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
    let id = existing.as_ref().map_or_else(Uuid::now_v7, |n| n.id);
    let row = nodes::ActiveModel {
        id: Set(id),
        name: Set(req.node_name.clone()),
        address: Set(req.advertise_addr.clone()),
        region: Set(req.region.clone()),
        runtimes: Set(runtimes),
        memory_mb: Set(i64::try_from(cap.memory_mb).unwrap_or(i64::MAX)),
        cpus_milli: Set(i32::try_from(cap.cpus_milli).unwrap_or(i32::MAX)),
        max_timeout_ms: Set(i64::try_from(req.max_timeout_ms).unwrap_or(i64::MAX)),
        docker_ok: Set(req.docker_ok),
        registered_at: Set(now),
        last_heartbeat: Set(now),
        warm: Set(warm_json(&cap.warm)),
        instance_memory_mb: Set(i64::try_from(cap.instance_memory_mb).unwrap_or(i64::MAX)),
        instance_cpus_milli: Set(i32::try_from(cap.instance_cpus_milli).unwrap_or(i32::MAX)),
        identity: Set(identity),
        // An operator's cordon or drain outlives the agent's restarts.
        schedulable: NotSet,
        draining: NotSet,
    };
    let row = match &existing {
        Some(old) => {
            let row = row.update(db).await?;
            if old.address != row.address {
                fleet.agents.forget(&old.address);
            }
            row
        }
        None => row.insert(db).await?,
    };
    info!(node_id = %id, address = %req.advertise_addr, docker_ok = req.docker_ok, "node registered");
    Ok(row)
}

/// Records a heartbeat and the capacity it carries; `None` when the node is unknown (it
/// must register again). Only the node's pinned identity may heartbeat for it.
pub(crate) async fn heartbeat(fleet: &Nodes, req: &HeartbeatRequest, identity: Option<&str>) -> Result<Option<nodes::Model>> {
    let Ok(id) = req.node_id.parse::<Uuid>() else { return Ok(None) };
    let db = &fleet.db;
    let Some(row) = nodes::Entity::find_by_id(id).one(db).await? else { return Ok(None) };
    check_pin(&row, identity)?;
    let mut am = row.into_active_model();
    am.last_heartbeat = Set(Utc::now());
    am.docker_ok = Set(req.docker_ok);
    if let Some(cap) = &req.capacity {
        am.memory_mb = Set(i64::try_from(cap.memory_mb).unwrap_or(i64::MAX));
        am.cpus_milli = Set(i32::try_from(cap.cpus_milli).unwrap_or(i32::MAX));
        am.warm = Set(warm_json(&cap.warm));
        am.instance_memory_mb = Set(i64::try_from(cap.instance_memory_mb).unwrap_or(i64::MAX));
        am.instance_cpus_milli = Set(i32::try_from(cap.instance_cpus_milli).unwrap_or(i32::MAX));
    }
    Ok(Some(am.update(db).await?))
}
