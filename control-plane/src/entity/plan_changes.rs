//! A subscription's plan history: one row per plan it moved to and when that took effect,
//! with the plan and the API's slug copied so statements outlive the API.
use sea_orm::entity::prelude::*;

/// A row of `plan_changes`; no foreign keys, like usage.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "plan_changes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub user_id: Uuid,
    pub api_id: Uuid,
    /// The API's slug (slugs never change).
    pub slug: String,
    /// The plan before; `None` for the first row of a subscription.
    pub from_plan_id: Option<Uuid>,
    /// The plan from `effective_at`; `None`: the subscription ended (its API was deleted).
    pub to_plan_id: Option<Uuid>,
    /// The plan's name, price and currency ('' and 0 when it ended).
    pub plan_name: String,
    pub price_minor: i64,
    pub currency: String,
    /// When the plan took (or takes) effect: at once for an upgrade, the start of the
    /// next month (UTC) for any other switch.
    pub effective_at: DateTimeUtc,
    /// When the change was asked for.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
