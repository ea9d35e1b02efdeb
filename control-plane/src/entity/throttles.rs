//! Throttle counters shared by every control-plane replica: one row per throttled key
//! (a login pair, an account, a client address, a user's executes), found by the SHA-256
//! of its namespaced key so that no email address or client address is stored in clear.
use sea_orm::entity::prelude::*;

/// A row of `throttles`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "throttles")]
pub struct Model {
    /// SHA-256 hex of the namespaced key, e.g. of `login:pair:…`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// SHA-256 hex of the key this row is lifted with (a login pair's account); `None`
    /// for rows lifted only by their own key.
    pub scope: Option<String>,
    /// Attempts counted in the current window.
    pub failures: i32,
    /// When the current window began.
    pub window_start: DateTimeUtc,
    /// Until when the key is refused.
    pub blocked_until: Option<DateTimeUtc>,
    /// When both the window and the block are over: from then on the row counts as
    /// absent, and the upkeep deletes it.
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
