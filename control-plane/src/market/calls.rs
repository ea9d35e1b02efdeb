//! Committed calls summed by the database: per key or per subscription, in a month. Read
//! by the access table (quotas used) and the usage views.
use std::collections::HashMap;

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
    // SUM of a bigint is a numeric on PostgreSQL: cast it back.
    let sum = Func::cast_as(Func::sum(Expr::col((usage_windows::Entity, usage_windows::Column::Calls))), Alias::new("BIGINT"));
    let rows: Vec<(String, Option<i64>)> = usage_windows::Entity::find()
        .select_only()
        .column(group)
        .column_as(Expr::from(sum), "calls")
        .filter(filter)
        .filter(usage_windows::Column::WindowStart.gte(month.start()))
        .filter(usage_windows::Column::WindowStart.lt(month.end()))
        .group_by(group)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|(id, calls)| (id, to_u64(calls.unwrap_or(0)))).collect())
}
