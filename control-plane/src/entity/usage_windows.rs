//! Committed usage folded into hourly windows, one row per (hour, API, user, key,
//! subscription, kind); absent ids are '' so the unique key holds on both databases.
use sea_orm::entity::prelude::*;

/// A row of `usage_windows`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_windows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The hour's start (UTC).
    pub window_start: DateTimeUtc,
    pub api_id: String,
    pub user_id: String,
    pub key_id: String,
    pub subscription_id: String,
    /// `call` or `execute`.
    pub kind: String,
    pub calls: i64,
    /// Answers of status 500 and above.
    pub errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub cpu_us: i64,
    /// JSON array of counts per latency bucket (see `market::histogram`).
    pub latency_hist: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
