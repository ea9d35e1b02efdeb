//! A consumer's subscription to an API: one per (user, API), on one of its plans.
use sea_orm::entity::prelude::*;

/// A row of `subscriptions`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub api_id: Uuid,
    /// The current plan; switching plans changes it in place.
    pub plan_id: Uuid,
    /// When the user first subscribed to the API.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
