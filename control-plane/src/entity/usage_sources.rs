//! How far each metering source (an edge's stream) is committed: exactly-once usage.
use sea_orm::entity::prelude::*;

/// A row of `usage_sources`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_sources")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub source: String,
    /// The last committed position `<ms>-<n>`; '' when nothing is.
    pub committed_through: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
