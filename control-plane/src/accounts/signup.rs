//! Signing up and proving the address: signup, email verification, forgotten and reset
//! passwords. Answers never reveal whether an address has an account. Signups and
//! forgotten-password requests are rate-limited per client address and in all.
use std::sync::Arc;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    TransactionTrait, sea_query::OnConflict,
};
use serde_json::json;
use souq_proto::{
    Kind, WireError,
    accounts::{
        ForgotPasswordRequest, MessageResponse, ResetPasswordRequest, SignupRequest, SignupResponse,
        VerifyEmailRequest,
    },
};
use tracing::{error, info, warn};
use uuid::Uuid;

use super::{Accounts, mails, rules, session, tokens};
use crate::{
    audit::{self, Event},
    auth::password,
    entity::users,
    error::{Error, Result},
    mail::MailKind,
};

/// The answer to every signup, whether or not the address was taken.
pub const SIGNUP_MESSAGE: &str =
    "If this address is new, its account now exists: check your inbox to confirm it. You can log in now.";
/// The answer to every forgotten-password request.
pub const FORGOT_MESSAGE: &str = "If an account uses this address, a reset link is on its way. It works for one hour.";

/// How often one address may be sent an "already registered" mail.
const ALREADY_REGISTERED_EVERY: chrono::Duration = chrono::Duration::hours(1);
/// How often one address may be sent a reset mail.
const RESET_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// 429 with the seconds to wait: `what` came too often from this client or from everybody.
fn too_many(what: &str, secs: u64) -> Error {
    WireError::rate_limited(format!("too many {what} requests; try again later"), secs).into()
}

/// Creates an account. The answer and its timing are the same for a taken address: the
/// password is hashed either way, and the mail is prepared after answering. Every request
/// counts against the signup limits, before anything else is done.
pub(crate) async fn signup(accounts: &Arc<Accounts>, req: SignupRequest) -> Result<SignupResponse> {
    accounts
        .signups
        .admit(&accounts.db, &req.client_ip, accounts.clock.now())
        .await?
        .map_err(|secs| too_many("signup", secs))?;
    let email = rules::normalize_email(&req.email)?;
    rules::check_password(&req.password, &email)?;
    let name = rules::check_name(req.name)?;
    let locale = rules::check_locale(req.locale)?;
    let hash = password::hash(req.password).await?;
    let now = accounts.clock.now();
    let id = Uuid::now_v7();
    let row = users::ActiveModel {
        id: Set(id),
        email: Set(email.clone()),
        password_hash: Set(hash),
        name: Set(name),
        locale: Set(locale),
        email_verified: Set(false),
        created_at: Set(now),
        tokens_valid_after: Set(None),
    };
    let inserted = users::Entity::insert(row)
        .on_conflict(OnConflict::column(users::Column::Email).do_nothing().to_owned())
        .exec_without_returning(&accounts.db)
        .await?
        > 0;
    let accounts = accounts.clone();
    tokio::spawn(async move {
        if let Err(e) = after_signup(&accounts, &email, inserted, &req.client_ip).await {
            error!(error = %e, "signup mail could not be queued");
        }
    });
    Ok(SignupResponse { message: SIGNUP_MESSAGE.into() })
}

async fn after_signup(accounts: &Accounts, email: &str, new: bool, ip: &str) -> Result<()> {
    let now = accounts.clock.now();
    let user = users::Entity::find()
        .filter(users::Column::Email.eq(email))
        .one(&accounts.db)
        .await?
        .ok_or_else(|| Error::Internal("user vanished after signup".into()))?;
    let txn = accounts.db.begin().await?;
    if new {
        let token = tokens::issue_email_token(&txn, user.id, tokens::Purpose::Verify, now).await?;
        mails::queue(&txn, now, &accounts.public_url, &user, MailKind::Verify, &token).await?;
    } else if !mails::recently_queued(&txn, email, MailKind::AlreadyRegistered, now - ALREADY_REGISTERED_EVERY).await? {
        mails::queue(&txn, now, &accounts.public_url, &user, MailKind::AlreadyRegistered, "").await?;
    }
    audit::record(&txn, now, Event::Signup, Some(user.id), ip, json!({"new_account": new})).await?;
    txn.commit().await?;
    accounts.mail_wake.notify_one();
    info!(user_id = %user.id, new_account = new, "signup");
    Ok(())
}

/// Confirms an address with the token from its mail, and sends the welcome mail.
pub(crate) async fn verify_email(accounts: &Accounts, req: VerifyEmailRequest) -> Result<MessageResponse> {
    let now = accounts.clock.now();
    let txn = accounts.db.begin().await?;
    let user_id = tokens::consume_email_token(&txn, req.token.trim(), tokens::Purpose::Verify, now).await?;
    let user = users::Entity::find_by_id(user_id)
        .one(&txn)
        .await?
        .ok_or_else(|| Error::kind(Kind::TokenUnknown, "the token is not known"))?;
    let mut am = user.clone().into_active_model();
    am.email_verified = Set(true);
    let user = am.update(&txn).await?;
    mails::queue(&txn, now, &accounts.public_url, &user, MailKind::Welcome, "").await?;
    audit::record(&txn, now, Event::VerifyEmail, Some(user.id), "", json!({})).await?;
    txn.commit().await?;
    accounts.mail_wake.notify_one();
    Ok(MessageResponse { message: "Your address is confirmed. Welcome to Souq.".into() })
}

/// Mails a reset link when the address has an account; answers the same either way.
/// Every request counts against the forgotten-password limits first.
pub(crate) async fn forgot_password(accounts: &Arc<Accounts>, req: ForgotPasswordRequest) -> Result<MessageResponse> {
    accounts
        .forgots
        .admit(&accounts.db, &req.client_ip, accounts.clock.now())
        .await?
        .map_err(|secs| too_many("password reset", secs))?;
    let email = rules::normalize_email(&req.email)?;
    let user = users::Entity::find().filter(users::Column::Email.eq(&email)).one(&accounts.db).await?;
    if let Some(user) = user {
        let accounts = accounts.clone();
        tokio::spawn(async move {
            if let Err(e) = queue_reset(&accounts, &user, &req.client_ip).await {
                error!(error = %e, "reset mail could not be queued");
            }
        });
    }
    Ok(MessageResponse { message: FORGOT_MESSAGE.into() })
}

async fn queue_reset(accounts: &Accounts, user: &users::Model, ip: &str) -> Result<()> {
    let now = accounts.clock.now();
    let txn = accounts.db.begin().await?;
    let throttled = mails::recently_queued(&txn, &user.email, MailKind::Reset, now - RESET_EVERY).await?;
    if !throttled {
        let token = tokens::issue_email_token(&txn, user.id, tokens::Purpose::Reset, now).await?;
        mails::queue(&txn, now, &accounts.public_url, user, MailKind::Reset, &token).await?;
    }
    audit::record(&txn, now, Event::ResetRequested, Some(user.id), ip, json!({"mail_queued": !throttled})).await?;
    txn.commit().await?;
    accounts.mail_wake.notify_one();
    Ok(())
}

/// Sets a new password with a mailed token. It does not log the user in, and it voids
/// every refresh token and every access token issued before it (and, when asked, every
/// API key); it lifts every login block on the account. Returns the answer and how many
/// API keys it revoked.
pub(crate) async fn reset_password(accounts: &Accounts, req: ResetPasswordRequest) -> Result<(MessageResponse, u64)> {
    let token = req.token.trim();
    let now = accounts.clock.now();
    // Check the token and the new password before using the token, so a rejected
    // password does not burn it.
    let row = tokens::peek_email_token(&accounts.db, token, tokens::Purpose::Reset, now).await?;
    let user = users::Entity::find_by_id(row.user_id)
        .one(&accounts.db)
        .await?
        .ok_or_else(|| Error::kind(Kind::TokenUnknown, "the token is not known"))?;
    rules::check_password(&req.password, &user.email)?;
    let hash = password::hash(req.password).await?;
    let now = accounts.clock.now();
    let email = user.email.clone();
    let txn = accounts.db.begin().await?;
    tokens::consume_email_token(&txn, token, tokens::Purpose::Reset, now).await?;
    let revoked = session::set_password(&txn, &accounts.public_url, user, hash, req.revoke_api_keys, now).await?;
    let detail = json!({"api_keys_revoked": revoked});
    audit::record(&txn, now, Event::PasswordReset, Some(row.user_id), &req.client_ip, detail).await?;
    txn.commit().await?;
    // The password is set whatever happens here; blocks left in place end with their window.
    if let Err(e) = accounts.logins.lift(&accounts.db, &email).await {
        warn!(error = %e, "could not lift the login blocks after a password reset");
    }
    accounts.mail_wake.notify_one();
    Ok((session::password_set("Your password is set. Log in with it.", revoked), revoked))
}
