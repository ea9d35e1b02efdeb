//! Accounts' secrets and their guards: password hashing, access-token signing, login
//! throttling and rate limits on anonymous writes.
pub mod common_passwords;
pub mod lockout;
pub mod opaque;
pub mod password;
pub mod rate;
pub mod throttle;
pub mod token;
