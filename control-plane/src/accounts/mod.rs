//! Accounts: the rules for their fields, the tokens they are mailed, their sessions, and
//! the flows of the REST contract's account rows.
pub mod mails;
pub mod rules;
pub mod session;
pub mod signup;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

pub use rules::{check_locale, check_name, check_password, normalize_email, to_wire};

use crate::{
    auth::{throttle::Throttle, token::TokenSigner},
    clock::Clock,
};

/// The accounts area's shared state: the token signer, the login throttles, and what
/// account mails need.
pub struct Accounts {
    /// The database.
    pub(crate) db: DatabaseConnection,
    /// The time source.
    pub(crate) clock: Arc<dyn Clock>,
    /// The edge's public URL, without a trailing `/`: links in mails start with it.
    pub(crate) public_url: String,
    /// Wakes the mail outbox once a mail is queued.
    pub(crate) mail_wake: Arc<Notify>,
    /// Login attempts per account.
    pub(crate) account_throttle: Throttle,
    /// Login attempts per client address.
    pub(crate) ip_throttle: Throttle,
    /// Signs and verifies access tokens.
    pub(crate) tokens: TokenSigner,
}

impl Accounts {
    /// The accounts area over `db`; queued mails wake `mail_wake`.
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>, public_url: &str, tokens: TokenSigner, mail_wake: Arc<Notify>) -> Self {
        let minute = Duration::from_secs(60);
        Accounts {
            db,
            clock,
            public_url: public_url.trim_end_matches('/').to_owned(),
            mail_wake,
            account_throttle: Throttle::new(5, 15 * minute, minute, 15 * minute),
            ip_throttle: Throttle::new(50, 15 * minute, minute, 15 * minute),
            tokens,
        }
    }
}
