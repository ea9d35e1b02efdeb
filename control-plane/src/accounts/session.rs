//! Sessions: login with throttling, access and refresh tokens, the caller of a request,
//! password changes and the revocations they cause.
use chrono::{DateTime, DurationRound, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QuerySelect, TransactionTrait,
};
use serde_json::json;
use souq_proto::{
    Kind, WireError,
    accounts::{
        ChangePasswordRequest, ListRevocationsRequest, LoginRequest, LoginResponse, MessageResponse,
        RefreshRequest, Revocation, Revocations,
    },
};
use tracing::info;
use uuid::Uuid;

use super::{Accounts, rules, tokens};
use crate::{
    audit::{self, Event},
    auth::password,
    entity::users,
    error::{Error, Result},
};

/// Most revocations sent in one answer.
const MAX_REVOCATIONS: u64 = 10_000;

fn bad_credentials() -> Error {
    Error::kind(Kind::Unauthenticated, "invalid email or password")
}

fn throttled(secs: u64) -> Error {
    WireError::rate_limited("too many failed attempts; try again later", secs).into()
}

/// Whole seconds of `t`, rounded up: tokens issued in the same second as a revocation
/// but before it must not survive it.
fn next_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t.duration_trunc(chrono::Duration::seconds(1)).unwrap_or(t);
    floor + chrono::Duration::seconds(1)
}

/// An access token for `user`, issued no earlier than its revocation cut-off.
fn access_token(accounts: &Accounts, user: &users::Model, now: DateTime<Utc>) -> Result<String> {
    let iat = user.tokens_valid_after.map_or(now, |cut| cut.max(now));
    accounts.tokens.issue(user.id, iat, now)
}

fn login_response(accounts: &Accounts, user: users::Model, now: DateTime<Utc>, refresh_token: String) -> Result<LoginResponse> {
    Ok(LoginResponse {
        access_token: access_token(accounts, &user, now)?,
        token_type: "Bearer".into(),
        expires_in: accounts.tokens.ttl().as_secs(),
        user: Some(rules::to_wire(user)),
        refresh_token,
    })
}

/// Logs in. A wrong password and an unknown address take the same path (a dummy argon2
/// verification) and give the same answer. Attempts are throttled per account and per
/// client address, and counted before the password is checked, so a burst of parallel
/// guesses gets no more than the throttle's limit evaluated. An attempt that ends without
/// a verdict (the hashing gate is full, the database failed) is given back; a success
/// clears the account's count and gives the address's attempt back.
pub(crate) async fn login(accounts: &Accounts, req: LoginRequest) -> Result<LoginResponse> {
    let now = accounts.clock.now();
    let account_key: String = req.email.trim().to_lowercase().chars().take(254).collect();
    let ip_key = req.client_ip.clone();
    let admitted = accounts.account_throttle.attempt(&account_key, now).and_then(|()| {
        accounts.ip_throttle.attempt(&ip_key, now).inspect_err(|_| accounts.account_throttle.undo(&account_key))
    });
    if let Err(secs) = admitted {
        audit::record(&accounts.db, now, Event::LoginFailure, None, &req.client_ip, json!({"reason": "throttled"})).await?;
        return Err(throttled(secs));
    }
    let verdict = async {
        let user = match rules::normalize_email(&req.email) {
            Ok(email) => users::Entity::find().filter(users::Column::Email.eq(email)).one(&accounts.db).await?,
            Err(_) => None,
        };
        let ok = password::verify(req.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        Ok::<_, Error>((ok, user))
    }
    .await;
    let user = match verdict {
        Err(e) => {
            accounts.account_throttle.undo(&account_key);
            accounts.ip_throttle.undo(&ip_key);
            return Err(e);
        }
        Ok((true, Some(u))) => u,
        Ok((_, user)) => {
            let user_id = user.map(|u| u.id);
            audit::record(&accounts.db, now, Event::LoginFailure, user_id, &req.client_ip, json!({"reason": "bad_credentials"}))
                .await?;
            return Err(bad_credentials());
        }
    };
    accounts.account_throttle.success(&account_key);
    accounts.ip_throttle.undo(&ip_key);
    let refresh = tokens::issue_refresh(&accounts.db, user.id, None, now).await?;
    audit::record(&accounts.db, now, Event::Login, Some(user.id), &req.client_ip, json!({})).await?;
    info!(user_id = %user.id, "login");
    login_response(accounts, user, now, refresh)
}

/// Trades a refresh token for a new pair; a reused one revokes its family.
pub(crate) async fn refresh(accounts: &Accounts, req: RefreshRequest) -> Result<LoginResponse> {
    let now = accounts.clock.now();
    let refused = || Error::kind(Kind::Unauthenticated, "invalid, expired or revoked refresh token");
    let txn = accounts.db.begin().await?;
    let outcome = tokens::rotate_refresh(&txn, req.refresh_token.trim(), now).await?;
    match outcome {
        tokens::Rotation::Refused => Err(refused()),
        tokens::Rotation::Reused { user_id } => {
            audit::record(&txn, now, Event::RefreshReuse, Some(user_id), &req.client_ip, json!({})).await?;
            txn.commit().await?;
            Err(refused())
        }
        tokens::Rotation::Rotated { user_id, refresh_token } => {
            let user = users::Entity::find_by_id(user_id).one(&txn).await?.ok_or_else(refused)?;
            txn.commit().await?;
            login_response(accounts, user, now, refresh_token)
        }
    }
}

/// The user a bearer token belongs to, if the token is valid and not revoked.
pub(crate) async fn caller(accounts: &Accounts, token: Option<&str>) -> Result<users::Model> {
    let invalid = || Error::kind(Kind::Unauthenticated, "invalid or expired token");
    let token = token.ok_or_else(|| Error::kind(Kind::Unauthenticated, "missing bearer token"))?;
    let claims = accounts.tokens.verify(token)?;
    let id: Uuid = claims.sub.parse().map_err(|_| invalid())?;
    let user = users::Entity::find_by_id(id).one(&accounts.db).await?.ok_or_else(invalid)?;
    if user.tokens_valid_after.is_some_and(|cut| i64::try_from(claims.iat).unwrap_or(i64::MAX) < cut.timestamp()) {
        return Err(invalid());
    }
    Ok(user)
}

/// Stores a new password hash and voids every earlier session of the user.
pub async fn set_password(db: &impl ConnectionTrait, user: users::Model, hash: String, now: DateTime<Utc>) -> Result<()> {
    let id = user.id;
    let mut am = user.into_active_model();
    am.password_hash = Set(hash);
    am.tokens_valid_after = Set(Some(next_second(now)));
    am.update(db).await?;
    tokens::revoke_all_refresh(db, id, now).await
}

/// Changes the caller's password, given the current one; wrong current passwords count
/// against the account's login throttle, before they are checked.
pub(crate) async fn change_password(accounts: &Accounts, token: Option<&str>, req: ChangePasswordRequest) -> Result<MessageResponse> {
    let user = caller(accounts, token).await?;
    let now = accounts.clock.now();
    let key = user.email.clone();
    accounts.account_throttle.attempt(&key, now).map_err(throttled)?;
    let ok = password::verify(req.current_password, Some(user.password_hash.clone()))
        .await
        .inspect_err(|_| accounts.account_throttle.undo(&key))?;
    if !ok {
        audit::record(&accounts.db, now, Event::LoginFailure, Some(user.id), &req.client_ip, json!({"reason": "change_password"}))
            .await?;
        return Err(Error::kind(Kind::Forbidden, "the current password is wrong"));
    }
    accounts.account_throttle.success(&key);
    rules::check_password(&req.new_password, &user.email).map_err(|e| match e {
        Error::Wire(w) => Error::Wire(WireError { field: Some("new_password".into()), ..w }),
        other => other,
    })?;
    let hash = password::hash(req.new_password).await?;
    let now = accounts.clock.now();
    let id = user.id;
    let txn = accounts.db.begin().await?;
    set_password(&txn, user, hash, now).await?;
    audit::record(&txn, now, Event::PasswordChange, Some(id), &req.client_ip, json!({})).await?;
    txn.commit().await?;
    Ok(MessageResponse { message: "Your password is changed. Log in again with it.".into() })
}

/// Users whose earlier access tokens are void, changed since the given time. Only cut-offs
/// younger than an access token's life matter; older tokens have expired anyway.
pub(crate) async fn list_revocations(accounts: &Accounts, req: ListRevocationsRequest) -> Result<Revocations> {
    let now = accounts.clock.now();
    let ttl = chrono::Duration::from_std(accounts.tokens.ttl()).unwrap_or(chrono::Duration::hours(1));
    let horizon = now - ttl - chrono::Duration::seconds(60);
    let since = i64::try_from(req.since_unix_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map_or(horizon, |s| (s - chrono::Duration::seconds(5)).max(horizon));
    let rows = users::Entity::find()
        .filter(users::Column::TokensValidAfter.gt(since))
        .limit(MAX_REVOCATIONS)
        .all(&accounts.db)
        .await?;
    Ok(Revocations {
        entries: rows
            .into_iter()
            .filter_map(|u| {
                let cut = u.tokens_valid_after?;
                Some(Revocation { user_id: u.id.to_string(), not_before: u64::try_from(cut.timestamp()).ok()? })
            })
            .collect(),
        now_unix_ms: u64::try_from(now.timestamp_millis()).unwrap_or(0),
    })
}
