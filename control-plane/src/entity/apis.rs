//! A deployed API: its name, unique slug, runtime and owner.
use sea_orm::entity::prelude::*;

/// A row of `apis`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "apis")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    /// Unique; the API's address: `/call/{slug}/…`.
    #[sea_orm(unique)]
    pub slug: String,
    /// Canonical runtime name.
    pub runtime: String,
    pub description: String,
    pub public: bool,
    /// The newest version's number (versions count from 1).
    pub latest_version: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
