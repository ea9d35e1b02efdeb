//! Accounts: the rules for their fields, the tokens they are mailed, their sessions, and
//! the flows of the REST contract's account rows.
pub mod mails;
pub mod rules;
pub mod session;
pub mod signup;
pub mod tokens;

pub use rules::{check_locale, check_name, check_password, normalize_email, to_wire};
