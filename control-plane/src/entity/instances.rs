//! One instance of an API version placed on a node, and the state its agent reported.
use sea_orm::entity::prelude::*;

/// Placed; the agent is starting it (or the deploy call is on its way).
pub const STARTING: &str = "starting";
/// Answering calls.
pub const RUNNING: &str = "running";
/// Died; its agent restarts it with backoff.
pub const CRASHED: &str = "crashed";
/// The handler failed to load; not retried.
pub const FAILED: &str = "failed";
/// Wanted no more: out of the routes, to be stopped on its agent and forgotten.
pub const STOPPING: &str = "stopping";

/// A row of `instances`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "instances")]
pub struct Model {
    /// 16 hex digits.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub api_id: Uuid,
    pub version: i32,
    pub node_id: Uuid,
    /// One of the constants above.
    pub state: String,
    pub error: Option<String>,
    pub restarts: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
