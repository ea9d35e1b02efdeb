//! A plan of an API: its monthly price in minor units, quota and rate limit.
use sea_orm::entity::prelude::*;

/// A row of `plans`; unique by (api_id, name).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "plans")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub api_id: Uuid,
    pub name: String,
    /// The flat monthly price, in minor units of `currency`.
    pub price_minor: i64,
    /// USD, SAR, AED or EGP.
    pub currency: String,
    /// Calls a subscriber may make per calendar month (UTC).
    pub monthly_quota: i64,
    pub rate_limit_per_minute: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
