//! Committed calls summed by the database: per key or per subscription, in a month or per
//! hour of it. Read by the access table (quotas used), the usage views and statements.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Alias, Expr, Func},
};

use super::{Month, to_u64};
use crate::{entity::usage_windows, error::Result};

/// Committed calls in `month` per value of the id column `group`, among rows matching
/// `filter`; summed by the database.
pub(crate) async fn in_month(
    db: &impl ConnectionTrait,
    group: usage_windows::Column,
    filter: Condition,
    month: Month,
) -> Result<HashMap<String, u64>> {
    let rows: Vec<(String, Option<i64>)> = usage_windows::Entity::find()
        .select_only()
        .column(group)
        .column_as(sum(), "calls")
        .filter(filter)
        .filter(usage_windows::Column::WindowStart.gte(month.start()))
        .filter(usage_windows::Column::WindowStart.lt(month.end()))
        .group_by(group)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|(id, calls)| (id, to_u64(calls.unwrap_or(0)))).collect())
}

/// Committed calls in `month` per value of the id column `group` and hour, among rows
/// matching `filter`; summed by the database. At most one row per id and hour of the month.
pub(crate) async fn hourly_in_month(
    db: &impl ConnectionTrait,
    group: usage_windows::Column,
    filter: Condition,
    month: Month,
) -> Result<Vec<(String, DateTime<Utc>, u64)>> {
    let rows: Vec<(String, DateTime<Utc>, Option<i64>)> = usage_windows::Entity::find()
        .select_only()
        .column(group)
        .column(usage_windows::Column::WindowStart)
        .column_as(sum(), "calls")
        .filter(filter)
        .filter(usage_windows::Column::WindowStart.gte(month.start()))
        .filter(usage_windows::Column::WindowStart.lt(month.end()))
        .group_by(group)
        .group_by(usage_windows::Column::WindowStart)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|(id, hour, calls)| (id, hour, to_u64(calls.unwrap_or(0)))).collect())
}

/// SUM of the calls; a SUM of a bigint is a numeric on PostgreSQL, so it is cast back.
fn sum() -> Expr {
    Expr::from(Func::cast_as(Func::sum(Expr::col((usage_windows::Entity, usage_windows::Column::Calls))), Alias::new("BIGINT")))
}
