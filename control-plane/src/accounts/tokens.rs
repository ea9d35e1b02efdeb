//! Single-use mail tokens (verify, reset) and rotating refresh tokens. Only hashes are
//! stored; every consumption is a conditional update, so a token works once even under
//! concurrent use.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr,
};
use souq_proto::Kind;
use uuid::Uuid;

use crate::{
    auth::opaque,
    entity::{email_tokens, refresh_tokens},
    error::{Error, Result},
};

/// How long a verification link works.
pub const VERIFY_TTL: chrono::Duration = chrono::Duration::hours(24);
/// How long a reset token works.
pub const RESET_TTL: chrono::Duration = chrono::Duration::hours(1);
/// How long a refresh token works.
pub const REFRESH_TTL: chrono::Duration = chrono::Duration::days(30);

/// What a mail token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Confirms an email address.
    Verify,
    /// Sets a new password.
    Reset,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::Reset => "reset",
        }
    }

    fn ttl(self) -> chrono::Duration {
        match self {
            Purpose::Verify => VERIFY_TTL,
            Purpose::Reset => RESET_TTL,
        }
    }
}

/// Issues a mail token and returns it raw (to mail, never to store). A new reset token
/// voids the user's older ones.
pub async fn issue_email_token(db: &impl ConnectionTrait, user_id: Uuid, purpose: Purpose, now: DateTime<Utc>) -> Result<String> {
    if purpose == Purpose::Reset {
        email_tokens::Entity::update_many()
            .col_expr(email_tokens::Column::UsedAt, Expr::value(Some(now)))
            .filter(email_tokens::Column::UserId.eq(user_id))
            .filter(email_tokens::Column::Purpose.eq(purpose.as_str()))
            .filter(email_tokens::Column::UsedAt.is_null())
            .exec(db)
            .await?;
    }
    let (raw, hash) = opaque::generate()?;
    email_tokens::Entity::insert(email_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.as_str().into()),
        token_hash: Set(hash),
        expires_at: Set(now + purpose.ttl()),
        used_at: Set(None),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(raw)
}

/// Checks a mail token without using it; returns its row.
pub async fn peek_email_token(db: &impl ConnectionTrait, raw: &str, purpose: Purpose, now: DateTime<Utc>) -> Result<email_tokens::Model> {
    if !opaque::well_formed(raw) {
        return Err(Error::kind(Kind::TokenMalformed, "the token is malformed"));
    }
    let row = email_tokens::Entity::find()
        .filter(email_tokens::Column::TokenHash.eq(opaque::hash(raw)))
        .filter(email_tokens::Column::Purpose.eq(purpose.as_str()))
        .one(db)
        .await?
        .ok_or_else(|| Error::kind(Kind::TokenUnknown, "the token is not known"))?;
    if row.used_at.is_some() {
        return Err(Error::kind(Kind::TokenUsed, "the token was already used, or a newer one replaced it"));
    }
    if row.expires_at <= now {
        return Err(Error::kind(Kind::TokenExpired, "the token has expired"));
    }
    Ok(row)
}

/// Uses a mail token once; returns the user it belongs to.
pub async fn consume_email_token(db: &impl ConnectionTrait, raw: &str, purpose: Purpose, now: DateTime<Utc>) -> Result<Uuid> {
    let row = peek_email_token(db, raw, purpose, now).await?;
    let done = email_tokens::Entity::update_many()
        .col_expr(email_tokens::Column::UsedAt, Expr::value(Some(now)))
        .filter(email_tokens::Column::Id.eq(row.id))
        .filter(email_tokens::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    if done.rows_affected != 1 {
        return Err(Error::kind(Kind::TokenUsed, "the token was already used, or a newer one replaced it"));
    }
    Ok(row.user_id)
}

/// Issues a refresh token in `family` (a new family for a login) and returns it raw.
pub async fn issue_refresh(db: &impl ConnectionTrait, user_id: Uuid, family: Option<Uuid>, now: DateTime<Utc>) -> Result<String> {
    let (raw, hash) = opaque::generate()?;
    refresh_tokens::Entity::insert(refresh_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        family_id: Set(family.unwrap_or_else(Uuid::now_v7)),
        token_hash: Set(hash),
        expires_at: Set(now + REFRESH_TTL),
        used_at: Set(None),
        revoked_at: Set(None),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(raw)
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// Rotated: the user and the new raw token.
    Rotated { user_id: Uuid, refresh_token: String },
    /// A token already rotated was presented again: its family is now revoked.
    Reused { user_id: Uuid },
    /// Unknown, expired or revoked.
    Refused,
}

/// The stored row of a raw refresh token, if it is well formed and known.
pub async fn find_refresh(db: &impl ConnectionTrait, raw: &str) -> Result<Option<refresh_tokens::Model>> {
    if !opaque::well_formed(raw) {
        return Ok(None);
    }
    Ok(refresh_tokens::Entity::find().filter(refresh_tokens::Column::TokenHash.eq(opaque::hash(raw))).one(db).await?)
}

/// Rotates a refresh token found by [`find_refresh`]; a second use revokes its whole
/// family. A token created before `not_before` (its user's session cut-off) is refused,
/// whether or not a revocation reached it: a login in flight during a reset can mint one
/// after the reset revoked the others. The rotating update requires the token unused and
/// unrevoked, so a revocation that commits first wins. The new token is stamped no earlier
/// than the old one, so a session begun after a cut-off stays after it.
pub async fn rotate_refresh(
    db: &impl ConnectionTrait,
    row: refresh_tokens::Model,
    not_before: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Rotation> {
    if row.revoked_at.is_some() || row.expires_at <= now || not_before.is_some_and(|cut| row.created_at < cut) {
        return Ok(Rotation::Refused);
    }
    let used = refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::UsedAt, Expr::value(Some(now)))
        .filter(refresh_tokens::Column::Id.eq(row.id))
        .filter(refresh_tokens::Column::UsedAt.is_null())
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    if used.rows_affected != 1 {
        let revoked = refresh_tokens::Entity::find_by_id(row.id).one(db).await?.is_none_or(|r| r.revoked_at.is_some());
        if revoked {
            return Ok(Rotation::Refused);
        }
        refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(Some(now)))
            .filter(refresh_tokens::Column::FamilyId.eq(row.family_id))
            .filter(refresh_tokens::Column::RevokedAt.is_null())
            .exec(db)
            .await?;
        return Ok(Rotation::Reused { user_id: row.user_id });
    }
    let refresh_token = issue_refresh(db, row.user_id, Some(row.family_id), now.max(row.created_at)).await?;
    Ok(Rotation::Rotated { user_id: row.user_id, refresh_token })
}

/// Revokes every refresh token of a user.
pub async fn revoke_all_refresh(db: &impl ConnectionTrait, user_id: Uuid, now: DateTime<Utc>) -> Result<()> {
    refresh_tokens::Entity::update_many()
        .col_expr(refresh_tokens::Column::RevokedAt, Expr::value(Some(now)))
        .filter(refresh_tokens::Column::UserId.eq(user_id))
        .filter(refresh_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}
