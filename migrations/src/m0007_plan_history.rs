//! Plan history: every plan a subscription was on and from when, kept apart from the
//! subscription (no foreign keys) so statements outlive a deleted API; and a
//! subscription's pending downgrade with the time it takes effect.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Apis {
    Table,
    Id,
    Slug,
}

#[derive(DeriveIden)]
enum Plans {
    Table,
    Id,
    Name,
    PriceMinor,
    Currency,
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    Id,
    UserId,
    ApiId,
    PlanId,
    CreatedAt,
    PendingPlanId,
    PlanChangesAt,
}

#[derive(DeriveIden)]
enum PlanChanges {
    Table,
    Id,
    SubscriptionId,
    UserId,
    ApiId,
    Slug,
    FromPlanId,
    ToPlanId,
    PlanName,
    PriceMinor,
    Currency,
    EffectiveAt,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(Table::alter().table(Subscriptions::Table).add_column(uuid_null(Subscriptions::PendingPlanId)).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Subscriptions::Table)
                    .add_column(timestamp_with_time_zone_null(Subscriptions::PlanChangesAt))
                    .to_owned(),
            )
            .await?;
        // The plan is copied (name, price, currency) with the API's slug: plans never
        // change, and a statement must read the same after its API and plans are gone.
        manager
            .create_table(
                Table::create()
                    .table(PlanChanges::Table)
                    .col(pk_uuid(PlanChanges::Id))
                    .col(uuid(PlanChanges::SubscriptionId))
                    .col(uuid(PlanChanges::UserId))
                    .col(uuid(PlanChanges::ApiId))
                    .col(string_len(PlanChanges::Slug, 80))
                    .col(uuid_null(PlanChanges::FromPlanId))
                    // NULL: the subscription ended (its API was deleted).
                    .col(uuid_null(PlanChanges::ToPlanId))
                    .col(string_len(PlanChanges::PlanName, 64))
                    .col(big_integer(PlanChanges::PriceMinor))
                    .col(string_len(PlanChanges::Currency, 3))
                    .col(timestamp_with_time_zone(PlanChanges::EffectiveAt))
                    .col(timestamp_with_time_zone(PlanChanges::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, first) in [("plan_changes_user", PlanChanges::UserId), ("plan_changes_subscription", PlanChanges::SubscriptionId)] {
            manager
                .create_index(Index::create().name(name).table(PlanChanges::Table).col(first).col(PlanChanges::EffectiveAt).to_owned())
                .await?;
        }
        // Subscriptions made before history existed start theirs here, on their current
        // plan since they were made; such a row takes its subscription's id.
        let s = |c: Subscriptions| (Subscriptions::Table, c);
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(PlanChanges::Table)
                    .columns([
                        PlanChanges::Id,
                        PlanChanges::SubscriptionId,
                        PlanChanges::UserId,
                        PlanChanges::ApiId,
                        PlanChanges::Slug,
                        PlanChanges::ToPlanId,
                        PlanChanges::PlanName,
                        PlanChanges::PriceMinor,
                        PlanChanges::Currency,
                        PlanChanges::EffectiveAt,
                        PlanChanges::CreatedAt,
                    ])
                    .select_from(
                        Query::select()
                            .column(s(Subscriptions::Id))
                            .column(s(Subscriptions::Id))
                            .column(s(Subscriptions::UserId))
                            .column(s(Subscriptions::ApiId))
                            .column((Apis::Table, Apis::Slug))
                            .column(s(Subscriptions::PlanId))
                            .column((Plans::Table, Plans::Name))
                            .column((Plans::Table, Plans::PriceMinor))
                            .column((Plans::Table, Plans::Currency))
                            .column(s(Subscriptions::CreatedAt))
                            .column(s(Subscriptions::CreatedAt))
                            .from(Subscriptions::Table)
                            .inner_join(Plans::Table, Expr::col((Plans::Table, Plans::Id)).equals(s(Subscriptions::PlanId)))
                            .inner_join(Apis::Table, Expr::col((Apis::Table, Apis::Id)).equals(s(Subscriptions::ApiId)))
                            .to_owned(),
                    )
                    .map_err(|e| DbErr::Migration(e.to_string()))?
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(PlanChanges::Table).to_owned()).await?;
        for c in [Subscriptions::PlanChangesAt, Subscriptions::PendingPlanId] {
            manager.alter_table(Table::alter().table(Subscriptions::Table).drop_column(c).to_owned()).await?;
        }
        Ok(())
    }
}
