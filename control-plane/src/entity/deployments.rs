//! The desired state of one API: which version, on how many replicas, where; or stopped.
use sea_orm::entity::prelude::*;

/// `desired` while the API should serve.
pub const RUNNING: &str = "running";
/// `desired` once stopped.
pub const STOPPED: &str = "stopped";

/// A row of `deployments` (one per API that was ever deployed).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deployments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub api_id: Uuid,
    pub version: i32,
    pub replicas: i32,
    pub region: Option<String>,
    /// `running` or `stopped`.
    pub desired: String,
    /// Why it is not running as desired (no node fits, the handler failed to load).
    pub reason: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
