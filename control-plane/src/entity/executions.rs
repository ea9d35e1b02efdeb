//! The record of one execute: who ran what where, and how it ended. The code itself is
//! kept only as a hash.
use sea_orm::entity::prelude::*;

/// A row of `executions`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "executions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    pub node_id: Option<Uuid>,
    pub runtime: String,
    pub code_sha256: String,
    pub exit_code: Option<i32>,
    pub success: bool,
    pub timed_out: bool,
    pub truncated: bool,
    pub oom_killed: bool,
    pub duration_ms: i64,
    pub created_at: DateTimeUtc,
    /// The signal that ended the run, if one did.
    pub signal: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
