//! One immutable version of an API's code.
use sea_orm::entity::prelude::*;

/// A row of `api_versions`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_versions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub api_id: Uuid,
    /// 1, 2, … per API.
    pub number: i32,
    pub code: String,
    /// Hex SHA-256 of `code`.
    pub code_sha256: String,
    pub code_bytes: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
