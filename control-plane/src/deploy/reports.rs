//! What agents report of their instances, at registration and in every heartbeat: the
//! states are recorded; an instance the control plane wants but the agent lacks is
//! deployed again; one it holds but nobody wants is stopped.
use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use souq_proto::agent::InstanceStatus;

use super::{Deployer, reconciler};
use crate::{entity::instances, error::Result, nodes::scheduler::Candidate};

/// Applies one node's full report of its instances.
pub(crate) async fn apply(deployer: &Deployer, node: Candidate, reported: &[InstanceStatus]) -> Result<()> {
    let rows = instances::Entity::find().filter(instances::Column::NodeId.eq(node.id)).all(&deployer.db).await?;
    let known: HashMap<&str, &instances::Model> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut changed = false;
    for s in reported {
        match known.get(s.instance_id.as_str()) {
            Some(row) => {
                let same = row.state == s.state().name()
                    && row.error.as_deref().unwrap_or("") == s.error
                    && i64::from(row.restarts) == i64::from(s.restarts);
                if !same && row.state != instances::STOPPING {
                    changed |= reconciler::record(deployer, s).await?;
                }
            }
            None => reconciler::stop_stray(deployer, s.instance_id.clone(), node.clone()),
        }
    }
    // A row that says the instance runs, but the agent does not have it (the agent was
    // restarted): deploy it again. A recently changed row may just have raced this report.
    let settled = chrono::Duration::from_std(deployer.nodes.heartbeat_interval * 2).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let lost: Vec<String> = rows
        .iter()
        .filter(|r| r.state == instances::RUNNING || r.state == instances::CRASHED)
        .filter(|r| now.signed_duration_since(r.updated_at) > settled)
        .filter(|r| !reported.iter().any(|s| s.instance_id == r.id))
        .map(|r| r.id.clone())
        .collect();
    if !lost.is_empty() {
        tracing::warn!(node = %node.name, instances = ?lost, "agent lost instances; deploying them again");
        instances::Entity::update_many()
            .col_expr(instances::Column::State, instances::STARTING.into())
            .col_expr(instances::Column::Error, Some("the node's agent lost it (restarted?); deploying again".to_owned()).into())
            .col_expr(instances::Column::UpdatedAt, now.into())
            .filter(instances::Column::Id.is_in(lost))
            .exec(&deployer.db)
            .await?;
        changed = true;
    }
    if changed {
        deployer.wake();
    }
    Ok(())
}
