//! The control plane's leader lease (issue 14): one row per lease, with its holder, epoch and expiry.
//! Also what each node last reported of its instances, so the leader finds strays and lost
//! instances whichever replica the heartbeat reached.
use sea_orm_migration::{prelude::*, schema::*, sea_orm::prelude::ChronoDateTimeUtc};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ControlPlaneLease {
    Table,
    Name,
    Holder,
    Epoch,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum NodeReports {
    Table,
    NodeId,
    Instances,
    ReportedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ControlPlaneLease::Table)
                    .col(string(ControlPlaneLease::Name).primary_key())
                    .col(string(ControlPlaneLease::Holder))
                    .col(big_integer(ControlPlaneLease::Epoch))
                    .col(timestamp_with_time_zone(ControlPlaneLease::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        // The reconciler's lease, free (expired long ago) and at epoch 0: the first
        // control plane to start takes epoch 1.
        let mut free = Query::insert();
        free.into_table(ControlPlaneLease::Table).columns([
            ControlPlaneLease::Name,
            ControlPlaneLease::Holder,
            ControlPlaneLease::Epoch,
            ControlPlaneLease::ExpiresAt,
        ]);
        free.values(["reconciler".into(), "".into(), 0i64.into(), ChronoDateTimeUtc::UNIX_EPOCH.into()])
            .map_err(|e| DbErr::Custom(e.to_string()))?;
        manager.exec_stmt(free).await?;
        manager
            .create_table(
                Table::create()
                    .table(NodeReports::Table)
                    .col(uuid(NodeReports::NodeId).primary_key())
                    .col(text(NodeReports::Instances))
                    .col(timestamp_with_time_zone(NodeReports::ReportedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(NodeReports::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ControlPlaneLease::Table).to_owned()).await
    }
}
