//! Accounts: the rules for their fields, the tokens they are mailed, their sessions, and
//! the flows of the REST contract's account rows.
pub mod mails;
pub mod rules;
pub mod session;
#[cfg(test)]
mod shared_throttle_tests;
pub mod signup;
pub mod tokens;
pub mod upkeep;

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;
use tokio::sync::Notify;

pub use crate::config::{AUDIT_RETENTION, FORGOT_LIMIT, SIGNUP_LIMIT};
pub use rules::{check_locale, check_name, check_password, normalize_email, to_wire};

use crate::{
    audit,
    auth::{
        lockout::LoginThrottle,
        rate::{RateConfig, RateLimit},
        token::TokenSigner,
    },
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
    /// Password checks per (account, client), per account and per client; like the two
    /// limits below, counted in the database and shared by every replica.
    pub(crate) logins: LoginThrottle,
    /// Signups per client and in all.
    pub(crate) signups: RateLimit,
    /// Forgotten-password requests per client and in all.
    pub(crate) forgots: RateLimit,
    /// Throttled logins not yet written to the audit log.
    pub(crate) throttled: audit::Tally,
    /// How long audit rows are kept.
    pub(crate) audit_retention: Duration,
    /// Signs and verifies access tokens.
    pub(crate) tokens: TokenSigner,
}

impl Accounts {
    /// The accounts area over `db`, with the default limits; queued mails wake `mail_wake`.
    pub fn new(db: DatabaseConnection, clock: Arc<dyn Clock>, public_url: &str, tokens: TokenSigner, mail_wake: Arc<Notify>) -> Self {
        Accounts {
            db,
            clock,
            public_url: public_url.trim_end_matches('/').to_owned(),
            mail_wake,
            logins: LoginThrottle::default(),
            signups: RateLimit::new("signup", SIGNUP_LIMIT),
            forgots: RateLimit::new("forgot", FORGOT_LIMIT),
            throttled: audit::Tally::default(),
            audit_retention: AUDIT_RETENTION,
            tokens,
        }
    }

    /// The same area with these limits on signups and forgotten passwords, and this
    /// audit retention.
    pub fn with_limits(mut self, signup: RateConfig, forgot: RateConfig, audit_retention: Duration) -> Self {
        self.signups = RateLimit::new("signup", signup);
        self.forgots = RateLimit::new("forgot", forgot);
        self.audit_retention = audit_retention;
        self
    }
}
