//! Operators cordon and drain nodes (issue 14): a cordoned node takes no new work; a
//! draining one also has its instances moved elsewhere.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Schedulable,
    Draining,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter().table(Nodes::Table).add_column(boolean(Nodes::Schedulable).default(true)).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Nodes::Table).add_column(boolean(Nodes::Draining).default(false)).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Nodes::Table).drop_column(Nodes::Draining).to_owned()).await?;
        manager.alter_table(Table::alter().table(Nodes::Table).drop_column(Nodes::Schedulable).to_owned()).await
    }
}
