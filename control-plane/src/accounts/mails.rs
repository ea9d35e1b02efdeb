//! The account mails: rendered in the user's locale with links built from the configured
//! public URL (never from a request's Host header), then queued in the outbox. A mail to
//! an address nobody has confirmed greets nobody by name: whoever signed up chose that
//! name, and it must not carry their text into a stranger's inbox.
use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use crate::{
    entity::users,
    error::Result,
    mail::{MailKind, MailVars, render},
    outbox,
};

fn kind_name(kind: MailKind) -> &'static str {
    match kind {
        MailKind::Verify => "verify",
        MailKind::AlreadyRegistered => "already-registered",
        MailKind::Welcome => "welcome",
        MailKind::Reset => "reset",
        MailKind::PasswordChanged => "password-changed",
    }
}

/// The link that confirms an address.
pub fn verify_link(public_url: &str, token: &str) -> String {
    format!("{}/api/v1/auth/verify-email/{token}", public_url.trim_end_matches('/'))
}

/// The page that sets a new password; the token rides in the fragment, which browsers
/// never send to a server, so it stays out of access logs.
pub fn reset_link(public_url: &str, token: &str) -> String {
    format!("{}/reset-password#token={token}", public_url.trim_end_matches('/'))
}

/// Renders a mail of `kind` for `user` and adds it to the outbox (inside the caller's
/// transaction). `token` is the raw single-use token for Verify and Reset mails.
pub async fn queue(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    public_url: &str,
    user: &users::Model,
    kind: MailKind,
    token: &str,
) -> Result<()> {
    queue_with(db, now, public_url, user, kind, token, 0).await
}

/// Queues the "your password was changed" mail, which says how many API keys are live.
pub async fn queue_password_changed(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    public_url: &str,
    user: &users::Model,
    live_keys: u64,
) -> Result<()> {
    queue_with(db, now, public_url, user, MailKind::PasswordChanged, "", live_keys).await
}

async fn queue_with(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    public_url: &str,
    user: &users::Model,
    kind: MailKind,
    token: &str,
    live_keys: u64,
) -> Result<()> {
    let base = public_url.trim_end_matches('/');
    let link = match kind {
        MailKind::Verify => verify_link(base, token),
        MailKind::Reset => reset_link(base, token),
        MailKind::AlreadyRegistered | MailKind::Welcome | MailKind::PasswordChanged => String::new(),
    };
    let login_url = format!("{base}/");
    let forgot_url = format!("{base}/reset-password");
    let vars = MailVars {
        name: user.name.as_deref().filter(|_| user.email_verified),
        email: &user.email,
        link: &link,
        token: if kind == MailKind::Reset { token } else { "" },
        login_url: &login_url,
        forgot_url: &forgot_url,
        live_keys,
    };
    let mail = render(kind, &user.locale, &vars);
    outbox::enqueue(db, now, &user.email, kind_name(kind), mail).await
}

/// Whether a mail of `kind` was queued for `to` since `since`.
pub async fn recently_queued(db: &impl ConnectionTrait, to: &str, kind: MailKind, since: DateTime<Utc>) -> Result<bool> {
    outbox::recently_queued(db, to, kind_name(kind), since).await
}
