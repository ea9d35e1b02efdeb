//! The control plane's leader lease row.
use sea_orm::entity::prelude::*;

/// A row of `control_plane_lease`: who holds the lease `name`, under which epoch, until when.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "control_plane_lease")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// `<hostname>/<8 hex>` of the replica that holds it; empty before the first.
    pub holder: String,
    /// One more on every takeover; commands and fenced writes carry it.
    pub epoch: i64,
    /// The lease is free from this instant on, unless renewed.
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
