//! The audit log of account events. Callers pass only non-secret details. Refused
//! (throttled) logins are tallied in memory and written as one row per client address
//! per flush, so a flood of them cannot grow the log a row per request; rows older than
//! the retention are deleted.
use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{entity::audit_log, error::Result};

/// Most client addresses a tally keeps apart between flushes; the rest are counted under
/// one row without an address.
pub const MAX_TALLIED: usize = 10_000;

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

/// Throttled logins counted per client address until the next [`Tally::flush`].
#[derive(Debug, Default)]
pub struct Tally {
    counts: Mutex<HashMap<String, u64>>,
}

impl Tally {
    /// Counts one throttled login from `client_ip`.
    pub fn add(&self, client_ip: &str) {
        let Ok(mut counts) = self.counts.lock() else { return };
        let key = if counts.len() < MAX_TALLIED || counts.contains_key(client_ip) { client_ip } else { "" };
        *counts.entry(key.to_owned()).or_default() += 1;
    }

    /// Writes one `login_failure` row per address counted since the last flush, with
    /// `{"reason": "throttled", "attempts": n}`; returns the rows written. Counts that
    /// could not be written are kept for the next flush.
    pub async fn flush(&self, db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<usize> {
        let taken: Vec<(String, u64)> = match self.counts.lock() {
            Ok(mut counts) => counts.drain().collect(),
            Err(_) => return Ok(0),
        };
        for (i, (ip, n)) in taken.iter().enumerate() {
            let detail = json!({"reason": "throttled", "attempts": n});
            if let Err(e) = record(db, now, Event::LoginFailure, None, ip, detail).await {
                if let Ok(mut counts) = self.counts.lock() {
                    for (ip, n) in &taken[i..] {
                        *counts.entry(ip.clone()).or_default() += n;
                    }
                }
                return Err(e);
            }
        }
        Ok(taken.len())
    }
}

/// Deletes the rows written before `before`; returns how many went.
pub async fn prune(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64> {
    let done = audit_log::Entity::delete_many().filter(audit_log::Column::CreatedAt.lt(before)).exec(db).await?;
    Ok(done.rows_affected)
}
