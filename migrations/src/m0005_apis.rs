//! Deployed APIs: the APIs, their immutable versions, the desired state of each (its
//! deployment) and the instances placed on nodes; nodes say what one instance reserves.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    InstanceMemoryMb,
    InstanceCpusMilli,
}

#[derive(DeriveIden)]
enum Apis {
    Table,
    Id,
    OwnerId,
    Name,
    Slug,
    Runtime,
    Description,
    Public,
    LatestVersion,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiVersions {
    Table,
    Id,
    ApiId,
    Number,
    Code,
    CodeSha256,
    CodeBytes,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    ApiId,
    Version,
    Replicas,
    Region,
    Desired,
    Reason,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    ApiId,
    Version,
    NodeId,
    State,
    Error,
    Restarts,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Nodes::Table).add_column(big_integer(Nodes::InstanceMemoryMb).default(0)).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Nodes::Table).add_column(integer(Nodes::InstanceCpusMilli).default(0)).to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Apis::Table)
                    .col(pk_uuid(Apis::Id))
                    .col(uuid(Apis::OwnerId))
                    .col(string_len(Apis::Name, 64))
                    .col(string_len_uniq(Apis::Slug, 80))
                    .col(string_len(Apis::Runtime, 16))
                    .col(string_len(Apis::Description, 1000))
                    .col(boolean(Apis::Public).default(false))
                    .col(integer(Apis::LatestVersion))
                    .col(timestamp_with_time_zone(Apis::CreatedAt))
                    .foreign_key(
                        ForeignKey::create().from(Apis::Table, Apis::OwnerId).to(Users::Table, Users::Id).on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("apis_owner").table(Apis::Table).col(Apis::OwnerId).to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiVersions::Table)
                    .col(pk_uuid(ApiVersions::Id))
                    .col(uuid(ApiVersions::ApiId))
                    .col(integer(ApiVersions::Number))
                    .col(text(ApiVersions::Code))
                    .col(string_len(ApiVersions::CodeSha256, 64))
                    .col(integer(ApiVersions::CodeBytes))
                    .col(timestamp_with_time_zone(ApiVersions::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiVersions::Table, ApiVersions::ApiId)
                            .to(Apis::Table, Apis::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_versions_number")
                    .table(ApiVersions::Table)
                    .col(ApiVersions::ApiId)
                    .col(ApiVersions::Number)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .col(pk_uuid(Deployments::ApiId))
                    .col(integer(Deployments::Version))
                    .col(integer(Deployments::Replicas))
                    .col(string_len_null(Deployments::Region, 64))
                    .col(string_len(Deployments::Desired, 16))
                    .col(text_null(Deployments::Reason))
                    .col(timestamp_with_time_zone(Deployments::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deployments::Table, Deployments::ApiId)
                            .to(Apis::Table, Apis::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // No foreign key to apis: an instance outlives its API until its agent stopped it.
        manager
            .create_table(
                Table::create()
                    .table(Instances::Table)
                    .col(string_len(Instances::Id, 64).primary_key())
                    .col(uuid(Instances::ApiId))
                    .col(integer(Instances::Version))
                    .col(uuid(Instances::NodeId))
                    .col(string_len(Instances::State, 16))
                    .col(text_null(Instances::Error))
                    .col(integer(Instances::Restarts).default(0))
                    .col(timestamp_with_time_zone(Instances::CreatedAt))
                    .col(timestamp_with_time_zone(Instances::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("instances_api").table(Instances::Table).col(Instances::ApiId).to_owned())
            .await?;
        manager
            .create_index(Index::create().name("instances_node").table(Instances::Table).col(Instances::NodeId).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [Instances::Table.into_iden(), Deployments::Table.into_iden(), ApiVersions::Table.into_iden(), Apis::Table.into_iden()] {
            manager.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        manager.alter_table(Table::alter().table(Nodes::Table).drop_column(Nodes::InstanceMemoryMb).to_owned()).await?;
        manager.alter_table(Table::alter().table(Nodes::Table).drop_column(Nodes::InstanceCpusMilli).to_owned()).await
    }
}
