//! The audit log of account events. Callers pass only non-secret details.
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use serde_json::Value;
use uuid::Uuid;

use crate::{entity::audit_log, error::Result};

/// Account events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A signup, for a new or an existing address.
    Signup,
    /// An address was confirmed.
    VerifyEmail,
    /// A login succeeded.
    Login,
    /// A login failed (wrong password, unknown address or throttled).
    LoginFailure,
    /// A password reset was asked for.
    ResetRequested,
    /// A password was reset with a mailed token.
    PasswordReset,
    /// A password was changed by its owner.
    PasswordChange,
    /// A rotated refresh token was used again; its family was revoked.
    RefreshReuse,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Signup => "signup",
            Event::VerifyEmail => "verify_email",
            Event::Login => "login",
            Event::LoginFailure => "login_failure",
            Event::ResetRequested => "reset_requested",
            Event::PasswordReset => "password_reset",
            Event::PasswordChange => "password_change",
            Event::RefreshReuse => "refresh_reuse",
        }
    }
}

/// Writes one event.
pub async fn record(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    event: Event,
    user_id: Option<Uuid>,
    client_ip: &str,
    detail: Value,
) -> Result<()> {
    let ip = (!client_ip.is_empty()).then(|| client_ip.chars().take(64).collect());
    audit_log::Entity::insert(audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        event: Set(event.as_str().into()),
        client_ip: Set(ip),
        detail: Set(detail.to_string()),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}
