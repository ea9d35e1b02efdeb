//! An API's status, summed up from its desired state, its instances and the nodes (pure),
//! and how many instances each node holds, for operators.
use std::collections::HashMap;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use souq_proto::apis::{ApiStatus, ReplicaStatus};
use uuid::Uuid;

use crate::{
    entity::{deployments, instances},
    error::Result,
};

/// How many instance rows (whatever their state) each node holds; only `node`'s if given.
pub(crate) async fn per_node(db: &DatabaseConnection, node: Option<Uuid>) -> Result<HashMap<Uuid, u32>> {
    let mut q = instances::Entity::find()
        .select_only()
        .column(instances::Column::NodeId)
        .column_as(instances::Column::Id.count(), "n")
        .group_by(instances::Column::NodeId);
    if let Some(id) = node {
        q = q.filter(instances::Column::NodeId.eq(id));
    }
    let rows: Vec<(Uuid, i64)> = q.into_tuple().all(db).await?;
    Ok(rows.into_iter().map(|(id, n)| (id, u32::try_from(n).unwrap_or(u32::MAX))).collect())
}

/// The status of API `api_id`: `stopped` when it is not meant to run; `failed` when the
/// desired version's handler failed to load; `running` once as many replicas of the
/// desired version run as wanted; `pending` until then, with the reason.
pub fn summarize(
    api_id: Uuid,
    deployment: Option<&deployments::Model>,
    rows: &[instances::Model],
    node_names: &HashMap<Uuid, String>,
) -> ApiStatus {
    let mut replicas: Vec<ReplicaStatus> = rows
        .iter()
        .map(|r| ReplicaStatus {
            instance_id: r.id.clone(),
            node: node_names.get(&r.node_id).cloned().unwrap_or_default(),
            state: r.state.clone(),
            version: u32::try_from(r.version).unwrap_or(0),
            error: r.error.clone(),
            restarts: u32::try_from(r.restarts).unwrap_or(0),
        })
        .collect();
    replicas.sort_by(|a, b| (b.version, &a.node, &a.instance_id).cmp(&(a.version, &b.node, &b.instance_id)));
    let Some(d) = deployment else {
        return ApiStatus { api_id: api_id.to_string(), state: "stopped".into(), instances: replicas, ..Default::default() };
    };
    let current: Vec<&instances::Model> = rows.iter().filter(|r| r.version == d.version && r.state != instances::STOPPING).collect();
    let running = current.iter().filter(|r| r.state == instances::RUNNING).count();
    let wanted = usize::try_from(d.replicas).unwrap_or(0);
    let failed = current.iter().find(|r| r.state == instances::FAILED);
    let (state, reason) = if d.desired == deployments::STOPPED {
        ("stopped", None)
    } else if let Some(f) = failed {
        ("failed", Some(f.error.clone().unwrap_or_else(|| "the handler failed to load".into())))
    } else if running >= wanted {
        ("running", None)
    } else {
        let why = d.reason.clone().unwrap_or_else(|| format!("{running} of {wanted} replicas running"));
        ("pending", Some(why))
    };
    ApiStatus {
        api_id: api_id.to_string(),
        state: state.into(),
        version: u32::try_from(d.version).ok(),
        replicas: u32::try_from(d.replicas).unwrap_or(0),
        region: d.region.clone(),
        reason,
        instances: replicas,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn deployment(version: i32, replicas: i32, desired: &str) -> deployments::Model {
        deployments::Model {
            api_id: Uuid::nil(),
            version,
            replicas,
            region: None,
            desired: desired.into(),
            reason: None,
            updated_at: Utc::now(),
        }
    }

    fn row(id: &str, version: i32, state: &str, error: Option<&str>) -> instances::Model {
        instances::Model {
            id: id.into(),
            api_id: Uuid::nil(),
            version,
            node_id: Uuid::nil(),
            state: state.into(),
            error: error.map(str::to_owned),
            restarts: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn states_follow_the_instances_of_the_desired_version() {
        let names = HashMap::from([(Uuid::nil(), "node-a".to_owned())]);
        let never = summarize(Uuid::nil(), None, &[], &names);
        assert_eq!((never.state.as_str(), never.version), ("stopped", None));

        let d = deployment(2, 2, deployments::RUNNING);
        let rows = [row("a", 2, instances::RUNNING, None), row("b", 2, instances::STARTING, None), row("c", 1, instances::RUNNING, None)];
        let s = summarize(Uuid::nil(), Some(&d), &rows, &names);
        assert_eq!((s.state.as_str(), s.version, s.reason.as_deref()), ("pending", Some(2), Some("1 of 2 replicas running")));
        assert_eq!(s.instances.len(), 3);
        assert_eq!(s.instances[0].node, "node-a");
        assert_eq!(s.instances[2].version, 1);

        let rows = [row("a", 2, instances::RUNNING, None), row("b", 2, instances::RUNNING, None)];
        assert_eq!(summarize(Uuid::nil(), Some(&d), &rows, &names).state, "running");

        let rows = [row("a", 2, instances::FAILED, Some("SyntaxError: invalid syntax (handler.py, line 1)"))];
        let s = summarize(Uuid::nil(), Some(&d), &rows, &names);
        assert_eq!(s.state, "failed");
        assert!(s.reason.unwrap().contains("SyntaxError"));

        let stopped = deployment(2, 1, deployments::STOPPED);
        assert_eq!(summarize(Uuid::nil(), Some(&stopped), &rows, &names).state, "stopped");
    }
}
