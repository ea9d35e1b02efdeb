//! A Souq account. The password is stored only as an argon2id hash.
use sea_orm::entity::prelude::*;

/// A row of `users`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Lower-cased and trimmed.
    #[sea_orm(unique)]
    pub email: String,
    pub password_hash: String,
    pub name: Option<String>,
    pub locale: String,
    pub email_verified: bool,
    pub created_at: DateTimeUtc,
    /// Access tokens issued (`iat`) before this are void: set by a password reset or change.
    pub tokens_valid_after: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
