//! Souq's database schema as sea-orm migrations; the same ones run on SQLite and PostgreSQL.
#![forbid(unsafe_code)]

pub use sea_orm_migration::prelude::*;

mod m0001_spine;
mod m0002_accounts;
mod m0003_execution_signal;
mod m0004_node_warm;
mod m0005_apis;
mod m0006_marketplace;
mod m0007_plan_history;
mod m0008_node_identity;
mod m0009_accounts_hardening;
mod m0010_leader_lease;
mod m0011_shared_throttles;
mod m0012_node_admin;

/// Applies Souq's migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_spine::Migration),
            Box::new(m0002_accounts::Migration),
            Box::new(m0003_execution_signal::Migration),
            Box::new(m0004_node_warm::Migration),
            Box::new(m0005_apis::Migration),
            Box::new(m0006_marketplace::Migration),
            Box::new(m0007_plan_history::Migration),
            Box::new(m0008_node_identity::Migration),
            Box::new(m0009_accounts_hardening::Migration),
            Box::new(m0010_leader_lease::Migration),
            Box::new(m0011_shared_throttles::Migration),
            Box::new(m0012_node_admin::Migration),
        ]
    }
}
