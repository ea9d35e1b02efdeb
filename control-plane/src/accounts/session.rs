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
use tracing::{info, warn};
use uuid::Uuid;

use super::{Accounts, mails, rules, tokens};
use crate::{
    audit::{self, Event},
    auth::password,
    entity::users,
    error::{Error, Result},
    market::keys,
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

/// The user's row, locked until the transaction ends (PostgreSQL; SQLite runs one writer
/// at a time anyway). A password reset or change updates this row first, so a session
/// being issued under the lock either sees the reset or finishes before it, and then the
/// reset's revocation sees the session.
async fn lock_user(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<users::Model>> {
    Ok(users::Entity::find_by_id(id).lock_exclusive().one(db).await?)
}

/// When a session issued now for `user` counts as made: never before the user's cut-off,
/// so a session begun after a reset in the same second survives it.
fn issued_at(user: &users::Model, now: DateTime<Utc>) -> DateTime<Utc> {
    user.tokens_valid_after.map_or(now, |cut| cut.max(now))
}

/// Gives back a password check that got no verdict. If that fails the check stays
/// counted, which errs on the safe side; the error is only logged, as the request
/// already fails with its own.
async fn give_back(accounts: &Accounts, account: &str, ip: &str, now: DateTime<Utc>) {
    if let Err(e) = accounts.logins.undo(&accounts.db, account, ip, now).await {
        warn!(error = %e, "could not give back a login attempt");
    }
}

/// Clears the throttle after a right password. If that fails the check stays counted
/// (safe: the client's count is only higher); the login goes on.
async fn cleared(accounts: &Accounts, account: &str, ip: &str, now: DateTime<Utc>) {
    if let Err(e) = accounts.logins.success(&accounts.db, account, ip, now).await {
        warn!(error = %e, "could not clear the login throttle after a success");
    }
}

/// Logs in. A wrong password and an unknown address take the same path (a dummy argon2
/// verification) and give the same answer. Attempts are throttled per (account, client),
/// per account and per client ([`crate::auth::lockout`]), and counted before the password
/// is checked, so a burst of parallel guesses gets no more than the throttle's limit
/// evaluated; the counts are shared by every replica, and when they cannot be kept the
/// login is refused. An attempt that ends without a verdict (the hashing gate is full, the
/// database failed) is given back; a success clears the pair. Refused attempts are tallied
/// for the audit log, not written one row each.
pub(crate) async fn login(accounts: &Accounts, req: LoginRequest) -> Result<LoginResponse> {
    let now = accounts.clock.now();
    let account_key: String = req.email.trim().to_lowercase().chars().take(254).collect();
    let ip = req.client_ip.as_str();
    // Fails closed: if the attempt cannot be counted (the database failed), the password
    // is not checked and the client gets a 503.
    if let Err(secs) = accounts.logins.attempt(&accounts.db, &account_key, ip, now).await? {
        accounts.throttled.add(ip);
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
    let checked = match verdict {
        Err(e) => {
            give_back(accounts, &account_key, ip, now).await;
            return Err(e);
        }
        Ok((true, Some(u))) => u,
        Ok((_, user)) => {
            let user_id = user.map(|u| u.id);
            audit::record(&accounts.db, now, Event::LoginFailure, user_id, ip, json!({"reason": "bad_credentials"})).await?;
            return Err(bad_credentials());
        }
    };
    cleared(accounts, &account_key, ip, now).await;
    let txn = accounts.db.begin().await?;
    // The password was checked against `checked`; a reset that committed since voids it.
    let user = match lock_user(&txn, checked.id).await? {
        Some(u) if u.password_hash == checked.password_hash => u,
        _ => return Err(bad_credentials()),
    };
    let refresh = tokens::issue_refresh(&txn, user.id, None, issued_at(&user, now)).await?;
    audit::record(&txn, now, Event::Login, Some(user.id), ip, json!({})).await?;
    txn.commit().await?;
    info!(user_id = %user.id, "login");
    login_response(accounts, user, now, refresh)
}

/// Trades a refresh token for a new pair; a reused one revokes its family, and one made
/// before its user's last password reset or change is refused.
pub(crate) async fn refresh(accounts: &Accounts, req: RefreshRequest) -> Result<LoginResponse> {
    let now = accounts.clock.now();
    let refused = || Error::kind(Kind::Unauthenticated, "invalid, expired or revoked refresh token");
    let txn = accounts.db.begin().await?;
    let row = tokens::find_refresh(&txn, req.refresh_token.trim()).await?.ok_or_else(refused)?;
    // Locked before the token rotates, in the order a reset takes them.
    let user = lock_user(&txn, row.user_id).await?.ok_or_else(refused)?;
    match tokens::rotate_refresh(&txn, row, user.tokens_valid_after, now).await? {
        tokens::Rotation::Refused => Err(refused()),
        tokens::Rotation::Reused { user_id } => {
            audit::record(&txn, now, Event::RefreshReuse, Some(user_id), &req.client_ip, json!({})).await?;
            txn.commit().await?;
            Err(refused())
        }
        tokens::Rotation::Rotated { refresh_token, .. } => {
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

/// Stores a new password hash and voids every earlier session of the user (the edge ends
/// their log follows too, from the same cut-off); with `revoke_keys`, revokes every API
/// key as well. Queues the "password changed" mail, which counts the keys still live.
/// Returns how many keys were revoked; the caller republishes the access table then.
pub async fn set_password(
    db: &impl ConnectionTrait,
    public_url: &str,
    user: users::Model,
    hash: String,
    revoke_keys: bool,
    now: DateTime<Utc>,
) -> Result<u64> {
    let id = user.id;
    let mut am = user.into_active_model();
    am.password_hash = Set(hash);
    am.tokens_valid_after = Set(Some(next_second(now)));
    let user = am.update(db).await?;
    tokens::revoke_all_refresh(db, id, now).await?;
    let (revoked, live) = keys::revoke_all_and_count(db, id, revoke_keys, now).await?;
    mails::queue_password_changed(db, now, public_url, &user, live).await?;
    Ok(revoked)
}

/// The answer to a reset or change, naming the keys it revoked.
pub(crate) fn password_set(message: &str, revoked_keys: u64) -> MessageResponse {
    let message = match revoked_keys {
        0 => message.to_owned(),
        1 => format!("{message} Your 1 API key is revoked."),
        n => format!("{message} Your {n} API keys are revoked."),
    };
    MessageResponse { message }
}

/// Changes the caller's password, given the current one; wrong current passwords count
/// against the login throttle, before they are checked. Returns the answer and how many
/// API keys it revoked.
pub(crate) async fn change_password(
    accounts: &Accounts,
    token: Option<&str>,
    req: ChangePasswordRequest,
) -> Result<(MessageResponse, u64)> {
    let user = caller(accounts, token).await?;
    let now = accounts.clock.now();
    let (key, ip) = (user.email.clone(), req.client_ip.clone());
    accounts.logins.attempt(&accounts.db, &key, &ip, now).await?.map_err(throttled)?;
    let ok = match password::verify(req.current_password, Some(user.password_hash.clone())).await {
        Ok(ok) => ok,
        Err(e) => {
            give_back(accounts, &key, &ip, now).await;
            return Err(e);
        }
    };
    if !ok {
        audit::record(&accounts.db, now, Event::LoginFailure, Some(user.id), &ip, json!({"reason": "change_password"}))
            .await?;
        return Err(Error::kind(Kind::Forbidden, "the current password is wrong"));
    }
    cleared(accounts, &key, &ip, now).await;
    rules::check_password(&req.new_password, &user.email).map_err(|e| match e {
        Error::Wire(w) => Error::Wire(WireError { field: Some("new_password".into()), ..w }),
        other => other,
    })?;
    let hash = password::hash(req.new_password).await?;
    let now = accounts.clock.now();
    let id = user.id;
    let txn = accounts.db.begin().await?;
    let revoked = set_password(&txn, &accounts.public_url, user, hash, req.revoke_api_keys, now).await?;
    audit::record(&txn, now, Event::PasswordChange, Some(id), &ip, json!({"api_keys_revoked": revoked})).await?;
    txn.commit().await?;
    accounts.mail_wake.notify_one();
    Ok((password_set("Your password is changed. Log in again with it.", revoked), revoked))
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
