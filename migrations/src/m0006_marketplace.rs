//! The marketplace: plans of an API, consumers' API keys and subscriptions, and metered
//! usage folded into hourly windows, with the record that makes usage reports idempotent.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Apis {
    Table,
    Id,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Plans {
    Table,
    Id,
    ApiId,
    Name,
    PriceMinor,
    Currency,
    MonthlyQuota,
    RateLimitPerMinute,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    UserId,
    Name,
    Prefix,
    Sha256,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    Id,
    UserId,
    ApiId,
    PlanId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UsageWindows {
    Table,
    Id,
    WindowStart,
    ApiId,
    UserId,
    KeyId,
    SubscriptionId,
    Kind,
    Calls,
    Errors,
    BytesIn,
    BytesOut,
    CpuUs,
    LatencyHist,
}

#[derive(DeriveIden)]
enum UsageBatches {
    Table,
    BatchId,
    Source,
    Events,
    CommittedAt,
}

#[derive(DeriveIden)]
enum UsageSources {
    Table,
    Source,
    CommittedThrough,
    UpdatedAt,
}

fn index(name: &str, table: impl IntoIden, cols: impl IntoIterator<Item = UsageWindows>) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table);
    for c in cols {
        i.col(c);
    }
    i.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Plans::Table)
                    .col(pk_uuid(Plans::Id))
                    .col(uuid(Plans::ApiId))
                    .col(string_len(Plans::Name, 64))
                    .col(big_integer(Plans::PriceMinor))
                    .col(string_len(Plans::Currency, 3))
                    .col(big_integer(Plans::MonthlyQuota))
                    .col(integer(Plans::RateLimitPerMinute))
                    .col(timestamp_with_time_zone(Plans::CreatedAt))
                    .foreign_key(
                        ForeignKey::create().from(Plans::Table, Plans::ApiId).to(Apis::Table, Apis::Id).on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("plans_api_name").table(Plans::Table).col(Plans::ApiId).col(Plans::Name).unique().to_owned())
            .await?;
        // Every API has a free plan from its creation; those made before plans existed get
        // theirs here. A free plan made here takes its API's id (ids are unique across APIs,
        // and this keeps the backfill plain SQL on both databases).
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(Plans::Table)
                    .columns([
                        Plans::Id,
                        Plans::ApiId,
                        Plans::Name,
                        Plans::PriceMinor,
                        Plans::Currency,
                        Plans::MonthlyQuota,
                        Plans::RateLimitPerMinute,
                        Plans::CreatedAt,
                    ])
                    .select_from(
                        Query::select()
                            .column(Apis::Id)
                            .column(Apis::Id)
                            .expr(Expr::val("free"))
                            .expr(Expr::val(0i64))
                            .expr(Expr::val("USD"))
                            .expr(Expr::val(1000i64))
                            .expr(Expr::val(60i32))
                            .column(Apis::CreatedAt)
                            .from(Apis::Table)
                            .to_owned(),
                    )
                    .map_err(|e| DbErr::Migration(e.to_string()))?
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(pk_uuid(ApiKeys::Id))
                    .col(uuid(ApiKeys::UserId))
                    .col(string_len(ApiKeys::Name, 64))
                    .col(string_len_uniq(ApiKeys::Prefix, 16))
                    .col(string_len_uniq(ApiKeys::Sha256, 64))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager.create_index(Index::create().name("api_keys_user").table(ApiKeys::Table).col(ApiKeys::UserId).to_owned()).await?;
        manager
            .create_table(
                Table::create()
                    .table(Subscriptions::Table)
                    .col(pk_uuid(Subscriptions::Id))
                    .col(uuid(Subscriptions::UserId))
                    .col(uuid(Subscriptions::ApiId))
                    .col(uuid(Subscriptions::PlanId))
                    .col(timestamp_with_time_zone(Subscriptions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Subscriptions::Table, Subscriptions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Subscriptions::Table, Subscriptions::ApiId)
                            .to(Apis::Table, Apis::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Subscriptions::Table, Subscriptions::PlanId)
                            .to(Plans::Table, Plans::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("subscriptions_user_api")
                    .table(Subscriptions::Table)
                    .col(Subscriptions::UserId)
                    .col(Subscriptions::ApiId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("subscriptions_api").table(Subscriptions::Table).col(Subscriptions::ApiId).to_owned())
            .await?;
        manager
            .create_index(Index::create().name("subscriptions_plan").table(Subscriptions::Table).col(Subscriptions::PlanId).to_owned())
            .await?;
        // Absent ids are '' rather than NULL, so that the unique index below holds on both
        // databases (NULL is never equal to NULL). No foreign keys: usage outlives keys,
        // subscriptions and APIs, and statements are built from it.
        manager
            .create_table(
                Table::create()
                    .table(UsageWindows::Table)
                    .col(pk_uuid(UsageWindows::Id))
                    .col(timestamp_with_time_zone(UsageWindows::WindowStart))
                    .col(string_len(UsageWindows::ApiId, 36))
                    .col(string_len(UsageWindows::UserId, 36))
                    .col(string_len(UsageWindows::KeyId, 36))
                    .col(string_len(UsageWindows::SubscriptionId, 36))
                    .col(string_len(UsageWindows::Kind, 16))
                    .col(big_integer(UsageWindows::Calls))
                    .col(big_integer(UsageWindows::Errors))
                    .col(big_integer(UsageWindows::BytesIn))
                    .col(big_integer(UsageWindows::BytesOut))
                    .col(big_integer(UsageWindows::CpuUs))
                    .col(text(UsageWindows::LatencyHist))
                    .to_owned(),
            )
            .await?;
        use UsageWindows as W;
        let t = || UsageWindows::Table;
        let mut key = index("usage_windows_key", t(), [W::WindowStart, W::ApiId, W::UserId, W::KeyId, W::SubscriptionId, W::Kind]);
        manager.create_index(key.unique().to_owned()).await?;
        manager.create_index(index("usage_windows_api", t(), [W::ApiId, W::WindowStart])).await?;
        manager.create_index(index("usage_windows_user", t(), [W::UserId, W::WindowStart])).await?;
        manager.create_index(index("usage_windows_subscription", t(), [W::SubscriptionId, W::WindowStart])).await?;
        manager
            .create_table(
                Table::create()
                    .table(UsageBatches::Table)
                    .col(string_len(UsageBatches::BatchId, 200).primary_key())
                    .col(string_len(UsageBatches::Source, 128))
                    .col(integer(UsageBatches::Events))
                    .col(timestamp_with_time_zone(UsageBatches::CommittedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("usage_batches_source")
                    .table(UsageBatches::Table)
                    .col(UsageBatches::Source)
                    .col(UsageBatches::CommittedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsageSources::Table)
                    .col(string_len(UsageSources::Source, 128).primary_key())
                    .col(string_len(UsageSources::CommittedThrough, 48))
                    .col(timestamp_with_time_zone(UsageSources::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            UsageSources::Table.into_iden(),
            UsageBatches::Table.into_iden(),
            UsageWindows::Table.into_iden(),
            Subscriptions::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Plans::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
