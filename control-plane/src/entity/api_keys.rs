//! A consumer's API key, stored only as the SHA-256 of the whole key and its prefix.
use sea_orm::entity::prelude::*;

/// A row of `api_keys`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    /// `souq_<8 chars>`: what identifies the key in lists and logs.
    #[sea_orm(unique)]
    pub prefix: String,
    /// Hex SHA-256 of the whole key string.
    #[sea_orm(unique)]
    pub sha256: String,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
