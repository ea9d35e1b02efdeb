//! Account tables: single-use email tokens, rotating refresh tokens, the mail outbox and
//! the audit log; and the per-user cut-off before which access tokens are void.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    TokensValidAfter,
}

#[derive(DeriveIden)]
enum EmailTokens {
    Table,
    Id,
    UserId,
    Purpose,
    TokenHash,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    UserId,
    FamilyId,
    TokenHash,
    ExpiresAt,
    UsedAt,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum MailOutbox {
    Table,
    Id,
    Recipient,
    Kind,
    Subject,
    TextBody,
    HtmlBody,
    Attempts,
    NextAttemptAt,
    SentAt,
    FailedAt,
    LastError,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    UserId,
    Event,
    ClientIp,
    Detail,
    CreatedAt,
}

fn user_fk(from: (impl IntoIden + 'static, impl IntoIden + 'static)) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from.0, from.1)
        .to(Users::Table, Users::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Users::Table).add_column(timestamp_with_time_zone_null(Users::TokensValidAfter)).to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EmailTokens::Table)
                    .col(pk_uuid(EmailTokens::Id))
                    .col(uuid(EmailTokens::UserId))
                    .col(string_len(EmailTokens::Purpose, 16))
                    .col(string_len_uniq(EmailTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(EmailTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(EmailTokens::UsedAt))
                    .col(timestamp_with_time_zone(EmailTokens::CreatedAt))
                    .foreign_key(&mut user_fk((EmailTokens::Table, EmailTokens::UserId)))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("email_tokens_user_purpose")
                    .table(EmailTokens::Table)
                    .col(EmailTokens::UserId)
                    .col(EmailTokens::Purpose)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(pk_uuid(RefreshTokens::Id))
                    .col(uuid(RefreshTokens::UserId))
                    .col(uuid(RefreshTokens::FamilyId))
                    .col(string_len_uniq(RefreshTokens::TokenHash, 64))
                    .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(RefreshTokens::UsedAt))
                    .col(timestamp_with_time_zone_null(RefreshTokens::RevokedAt))
                    .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
                    .foreign_key(&mut user_fk((RefreshTokens::Table, RefreshTokens::UserId)))
                    .to_owned(),
            )
            .await?;
        for (name, col) in [("refresh_tokens_family", RefreshTokens::FamilyId), ("refresh_tokens_user", RefreshTokens::UserId)] {
            manager
                .create_index(Index::create().name(name).table(RefreshTokens::Table).col(col).to_owned())
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(MailOutbox::Table)
                    .col(pk_uuid(MailOutbox::Id))
                    .col(string_len(MailOutbox::Recipient, 254))
                    .col(string_len(MailOutbox::Kind, 32))
                    .col(string(MailOutbox::Subject))
                    .col(text(MailOutbox::TextBody))
                    .col(text(MailOutbox::HtmlBody))
                    .col(integer(MailOutbox::Attempts).default(0))
                    .col(timestamp_with_time_zone(MailOutbox::NextAttemptAt))
                    .col(timestamp_with_time_zone_null(MailOutbox::SentAt))
                    .col(timestamp_with_time_zone_null(MailOutbox::FailedAt))
                    .col(text_null(MailOutbox::LastError))
                    .col(timestamp_with_time_zone(MailOutbox::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("mail_outbox_due")
                    .table(MailOutbox::Table)
                    .col(MailOutbox::SentAt)
                    .col(MailOutbox::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditLog::Table)
                    .col(pk_uuid(AuditLog::Id))
                    .col(uuid_null(AuditLog::UserId))
                    .col(string_len(AuditLog::Event, 32))
                    .col(string_len_null(AuditLog::ClientIp, 64))
                    .col(text(AuditLog::Detail))
                    .col(timestamp_with_time_zone(AuditLog::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_log_user_created")
                    .table(AuditLog::Table)
                    .col(AuditLog::UserId)
                    .col(AuditLog::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            AuditLog::Table.into_iden(),
            MailOutbox::Table.into_iden(),
            RefreshTokens::Table.into_iden(),
            EmailTokens::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        manager
            .alter_table(Table::alter().table(Users::Table).drop_column(Users::TokensValidAfter).to_owned())
            .await
    }
}
