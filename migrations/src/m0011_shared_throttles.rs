//! Throttles shared by every control-plane replica (issue 14): login, signup,
//! forgotten-password and execute counters, one row per hashed key, with its back-off
//! state and the time it may be deleted.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Throttles {
    Table,
    Key,
    Scope,
    Failures,
    WindowStart,
    BlockedUntil,
    ExpiresAt,
}

/// The upkeep deletes expired rows by this index.
const EXPIRES: &str = "throttles_expires_at";
/// A completed password reset deletes every login pair of the account by this index.
const SCOPE: &str = "throttles_scope";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Throttles::Table)
                    // SHA-256 hex: 64 characters.
                    .col(string_len(Throttles::Key, 64).primary_key())
                    .col(string_len_null(Throttles::Scope, 64))
                    .col(integer(Throttles::Failures))
                    .col(timestamp_with_time_zone(Throttles::WindowStart))
                    .col(timestamp_with_time_zone_null(Throttles::BlockedUntil))
                    .col(timestamp_with_time_zone(Throttles::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name(EXPIRES).table(Throttles::Table).col(Throttles::ExpiresAt).to_owned())
            .await?;
        manager.create_index(Index::create().name(SCOPE).table(Throttles::Table).col(Throttles::Scope).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Throttles::Table).to_owned()).await
    }
}
