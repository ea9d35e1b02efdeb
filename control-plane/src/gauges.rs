//! The gauges every replica refreshes from the database on its table-following loop:
//! instances by state, nodes by state, and the mail outbox's depth and oldest age. Each
//! replica reports the same values, so alerts may take `max` over the replicas.
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{
    entity::{instances, mail_outbox, nodes},
    error::Result,
    metrics::{Metrics, StateLabels},
};

/// Every instance state; one not listed counts as `other`.
const INSTANCE_STATES: [&str; 5] =
    [instances::STARTING, instances::RUNNING, instances::CRASHED, instances::FAILED, instances::STOPPING];
/// The node states: takes work, cordoned, draining, silent past the TTL.
pub const NODE_STATES: [&str; 4] = ["ready", "cordoned", "draining", "down"];

/// A node's state for the gauge: `down` past `node_ttl` without a heartbeat (as the node
/// list tells it), else `draining`, `cordoned` or `ready` by the operators' flags.
pub fn node_state(last_heartbeat: DateTime<Utc>, schedulable: bool, draining: bool, now: DateTime<Utc>, node_ttl: Duration) -> &'static str {
    let ttl = chrono::Duration::from_std(node_ttl).unwrap_or(chrono::Duration::MAX);
    if now.signed_duration_since(last_heartbeat) > ttl {
        "down"
    } else if draining {
        "draining"
    } else if !schedulable {
        "cordoned"
    } else {
        "ready"
    }
}

/// Refreshes every gauge from `db` as of `now`; on error the gauges keep their last values.
pub(crate) async fn refresh(db: &impl ConnectionTrait, metrics: &Metrics, now: DateTime<Utc>, node_ttl: Duration) -> Result<()> {
    instance_gauges(db, metrics).await?;
    node_gauges(db, metrics, now, node_ttl).await?;
    outbox_gauges(db, metrics, now).await
}

async fn instance_gauges(db: &impl ConnectionTrait, metrics: &Metrics) -> Result<()> {
    let counts: Vec<(String, i64)> = instances::Entity::find()
        .select_only()
        .column(instances::Column::State)
        .column_as(instances::Column::Id.count(), "n")
        .group_by(instances::Column::State)
        .into_tuple()
        .all(db)
        .await?;
    let mut by_state = [0i64; INSTANCE_STATES.len() + 1];
    for (state, n) in counts {
        let at = INSTANCE_STATES.iter().position(|s| *s == state).unwrap_or(INSTANCE_STATES.len());
        by_state[at] = by_state[at].saturating_add(n);
    }
    for (state, n) in INSTANCE_STATES.iter().chain(["other"].iter()).zip(by_state) {
        metrics.instances.get_or_create(&StateLabels { state }).set(n);
    }
    Ok(())
}

async fn node_gauges(db: &impl ConnectionTrait, metrics: &Metrics, now: DateTime<Utc>, node_ttl: Duration) -> Result<()> {
    let rows: Vec<(DateTime<Utc>, bool, bool)> = nodes::Entity::find()
        .select_only()
        .column(nodes::Column::LastHeartbeat)
        .column(nodes::Column::Schedulable)
        .column(nodes::Column::Draining)
        .into_tuple()
        .all(db)
        .await?;
    let mut by_state = [0i64; NODE_STATES.len()];
    for (last, schedulable, draining) in rows {
        let state = node_state(last, schedulable, draining, now, node_ttl);
        if let Some(at) = NODE_STATES.iter().position(|s| *s == state) {
            by_state[at] += 1;
        }
    }
    for (state, n) in NODE_STATES.iter().zip(by_state) {
        metrics.nodes.get_or_create(&StateLabels { state }).set(n);
    }
    Ok(())
}

/// Pending mail: neither sent nor given up on.
async fn outbox_gauges(db: &impl ConnectionTrait, metrics: &Metrics, now: DateTime<Utc>) -> Result<()> {
    let pending = || {
        mail_outbox::Entity::find().filter(mail_outbox::Column::SentAt.is_null()).filter(mail_outbox::Column::FailedAt.is_null())
    };
    let depth = pending().count(db).await?;
    let oldest: Option<DateTime<Utc>> = pending()
        .select_only()
        .column(mail_outbox::Column::CreatedAt)
        .order_by_asc(mail_outbox::Column::CreatedAt)
        .into_tuple()
        .one(db)
        .await?;
    let age = oldest.map_or(0.0, |at| now.signed_duration_since(at).to_std().unwrap_or_default().as_secs_f64());
    metrics.mail_outbox_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    metrics.mail_outbox_oldest_age.set(age);
    Ok(())
}

#[cfg(test)]
#[path = "gauges_tests.rs"]
mod tests;
