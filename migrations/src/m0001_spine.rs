//! The spine's tables: users, nodes and executions.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    Name,
    Locale,
    EmailVerified,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
    Name,
    Address,
    Region,
    Runtimes,
    MemoryMb,
    CpusMilli,
    MaxTimeoutMs,
    DockerOk,
    RegisteredAt,
    LastHeartbeat,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    UserId,
    NodeId,
    Runtime,
    CodeSha256,
    ExitCode,
    Success,
    TimedOut,
    Truncated,
    OomKilled,
    DurationMs,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(pk_uuid(Users::Id))
                    .col(string_len_uniq(Users::Email, 254))
                    .col(string(Users::PasswordHash))
                    .col(string_len_null(Users::Name, 200))
                    .col(string_len(Users::Locale, 16))
                    .col(boolean(Users::EmailVerified).default(false))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Nodes::Table)
                    .col(pk_uuid(Nodes::Id))
                    .col(string_len_uniq(Nodes::Name, 128))
                    .col(string(Nodes::Address))
                    .col(string_len(Nodes::Region, 64))
                    .col(string(Nodes::Runtimes))
                    .col(big_integer(Nodes::MemoryMb))
                    .col(integer(Nodes::CpusMilli))
                    .col(big_integer(Nodes::MaxTimeoutMs))
                    .col(boolean(Nodes::DockerOk))
                    .col(timestamp_with_time_zone(Nodes::RegisteredAt))
                    .col(timestamp_with_time_zone(Nodes::LastHeartbeat))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Executions::Table)
                    .col(pk_uuid(Executions::Id))
                    .col(uuid(Executions::UserId))
                    .col(uuid_null(Executions::NodeId))
                    .col(string_len(Executions::Runtime, 16))
                    .col(string_len(Executions::CodeSha256, 64))
                    .col(integer_null(Executions::ExitCode))
                    .col(boolean(Executions::Success))
                    .col(boolean(Executions::TimedOut))
                    .col(boolean(Executions::Truncated))
                    .col(boolean(Executions::OomKilled))
                    .col(big_integer(Executions::DurationMs))
                    .col(timestamp_with_time_zone(Executions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Executions::Table, Executions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Executions::Table, Executions::NodeId)
                            .to(Nodes::Table, Nodes::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("executions_user_created")
                    .table(Executions::Table)
                    .col(Executions::UserId)
                    .col(Executions::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [Executions::Table.into_iden(), Nodes::Table.into_iden(), Users::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
