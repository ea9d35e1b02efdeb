//! What each node last reported of its instances, for the leader to find strays.
use sea_orm::entity::prelude::*;

/// A row of `node_reports`: the instance ids a node's agent last reported, and when.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node_reports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: Uuid,
    /// JSON array of the instance ids the agent holds.
    #[sea_orm(column_type = "Text")]
    pub instances: String,
    pub reported_at: DateTimeUtc,
}

impl Model {
    /// The reported instance ids; none if the stored JSON is unreadable.
    pub fn ids(&self) -> Vec<String> {
        serde_json::from_str(&self.instances).unwrap_or_default()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
