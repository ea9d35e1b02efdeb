//! Accounts' secrets and their guards: password hashing, access-token signing, login
//! throttling and rate limits on anonymous writes, counted in the database so that every
//! control-plane replica shares them.
pub mod backoff;
pub mod common_passwords;
pub mod lockout;
pub mod opaque;
pub mod password;
pub mod rate;
#[cfg(test)]
mod shared_db_tests;
#[cfg(test)]
pub(crate) mod test_db;
pub mod throttle;
pub mod token;
