//! What agents report of their instances, at registration and in every heartbeat, to
//! whichever replica of the control plane they reach: the states are recorded and the
//! instance ids kept per node (`node_reports`). The leader's reconciler compares those
//! with the instance rows ([`judge`]): an instance the control plane wants but the agent
//! lacks is deployed again; one it holds but nobody wants is stopped.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::OnConflict};
use souq_proto::agent::InstanceStatus;
use uuid::Uuid;

use super::Deployer;
use crate::{
    entity::{instances, node_reports},
    error::{Error, Result},
    nodes::scheduler::Candidate,
};

/// Most instance ids kept of one report; an agent holds far fewer (its memory bounds them).
const MAX_REPORTED: usize = 10_000;

/// Applies one node's full report of its instances: records their states and keeps
/// their ids for the leader. Any replica does this; none decides anything from it.
pub(crate) async fn apply(deployer: &Deployer, node: Candidate, reported: &[InstanceStatus]) -> Result<()> {
    let ids: Vec<&str> = reported.iter().take(MAX_REPORTED).map(|s| s.instance_id.as_str()).collect();
    let json = serde_json::to_string(&ids).map_err(|e| Error::Internal(e.to_string()))?;
    node_reports::Entity::insert(node_reports::ActiveModel {
        node_id: Set(node.id),
        instances: Set(json),
        reported_at: Set(Utc::now()),
    })
    .on_conflict(
        OnConflict::column(node_reports::Column::NodeId)
            .update_columns([node_reports::Column::Instances, node_reports::Column::ReportedAt])
            .to_owned(),
    )
    .exec_without_returning(&deployer.db)
    .await?;
    let rows = instances::Entity::find().filter(instances::Column::NodeId.eq(node.id)).all(&deployer.db).await?;
    let known: HashMap<&str, &instances::Model> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut changed = false;
    for s in reported {
        if let Some(row) = known.get(s.instance_id.as_str()) {
            let same = row.state == s.state().name()
                && row.error.as_deref().unwrap_or("") == s.error
                && i64::from(row.restarts) == i64::from(s.restarts);
            if !same && row.state != instances::STOPPING {
                changed |= record(&deployer.db, s).await?;
            }
        }
    }
    if changed {
        deployer.wake();
    }
    Ok(())
}

/// Records what an agent said of an instance, unless it was retired meanwhile: on `db`,
/// a heartbeat's report on any replica, or the leader's fenced transaction.
pub(crate) async fn record(db: &impl ConnectionTrait, s: &InstanceStatus) -> Result<bool> {
    let updated = instances::Entity::update_many()
        .col_expr(instances::Column::State, s.state().name().into())
        .col_expr(instances::Column::Error, (!s.error.is_empty()).then(|| s.error.clone()).into())
        .col_expr(instances::Column::Restarts, i32::try_from(s.restarts).unwrap_or(i32::MAX).into())
        .col_expr(instances::Column::UpdatedAt, Utc::now().into())
        .filter(instances::Column::Id.eq(&s.instance_id))
        .filter(instances::Column::State.ne(instances::STOPPING))
        .exec(db)
        .await?;
    Ok(updated.rows_affected > 0)
}

/// What the leader makes of the nodes' last reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Instances an agent holds that no row wants, with their node and the time of the
    /// report: to stop.
    pub(crate) strays: Vec<(String, Uuid, DateTime<Utc>)>,
    /// Rows that say an instance runs, but its agent reported well after their last change
    /// without it (the agent was restarted): to deploy again.
    pub(crate) lost: Vec<String>,
}

/// Compares the live nodes' last `reports` (at most `node_ttl` old) with the instance
/// `rows`. A row changed less than `settled` before a report may just have raced it.
pub(crate) fn judge(
    reports: &[node_reports::Model],
    rows: &[instances::Model],
    now: DateTime<Utc>,
    node_ttl: chrono::Duration,
    settled: chrono::Duration,
) -> Verdict {
    let wanted: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let mut verdict = Verdict::default();
    for report in reports.iter().filter(|r| now.signed_duration_since(r.reported_at) <= node_ttl) {
        let held: HashSet<String> = report.ids().into_iter().collect();
        let mut strays: Vec<&String> = held.iter().filter(|id| !wanted.contains(id.as_str())).collect();
        strays.sort();
        verdict.strays.extend(strays.into_iter().map(|id| (id.clone(), report.node_id, report.reported_at)));
        verdict.lost.extend(
            rows.iter()
                .filter(|r| r.node_id == report.node_id)
                .filter(|r| r.state == instances::RUNNING || r.state == instances::CRASHED)
                .filter(|r| report.reported_at.signed_duration_since(r.updated_at) > settled)
                .filter(|r| !held.contains(&r.id))
                .map(|r| r.id.clone()),
        );
    }
    verdict
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(id: &str, node: Uuid, state: &str, updated_at: DateTime<Utc>) -> instances::Model {
        instances::Model {
            id: id.into(),
            api_id: Uuid::nil(),
            version: 1,
            node_id: node,
            state: state.into(),
            error: None,
            restarts: 0,
            created_at: updated_at,
            updated_at,
        }
    }

    #[test]
    fn strays_and_lost_instances_come_from_the_last_reports() {
        let now = Utc::now();
        let (a, b, gone) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let secs = chrono::Duration::seconds;
        let report = |node, ids: &[&str], age| node_reports::Model {
            node_id: node,
            instances: serde_json::to_string(ids).unwrap(),
            reported_at: now - secs(age),
        };
        let reports = [report(a, &["kept", "stray"], 0), report(b, &["other"], 1), report(gone, &["old"], 60)];
        let rows = [
            row("kept", a, instances::RUNNING, now - secs(30)),
            row("lost", a, instances::RUNNING, now - secs(30)),
            row("fresh", a, instances::RUNNING, now),
            row("starting", a, instances::STARTING, now - secs(30)),
            row("other", b, instances::RUNNING, now - secs(30)),
        ];
        let v = judge(&reports, &rows, now, secs(15), secs(2));
        assert_eq!(v.strays, vec![("stray".to_owned(), a, now)], "the dead node's report is too old to act on");
        assert_eq!(v.lost, vec!["lost".to_owned()], "a fresh or starting row is not lost");
    }
}
