//! A committed usage batch, by its idempotent id `<source>/<last position>`.
use sea_orm::entity::prelude::*;

/// A row of `usage_batches`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_batches")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub batch_id: String,
    pub source: String,
    /// How many of its events were new.
    pub events: i32,
    pub committed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
