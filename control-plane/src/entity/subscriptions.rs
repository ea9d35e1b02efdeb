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
    /// The plan in force; an upgrade changes it in place at once.
    pub plan_id: Uuid,
    /// When the user first subscribed to the API.
    pub created_at: DateTimeUtc,
    /// The plan a downgrade (or any switch that is not an upgrade) moves to ...
    pub pending_plan_id: Option<Uuid>,
    /// ... at this time: the start of the month after it was asked for (UTC).
    pub plan_changes_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
