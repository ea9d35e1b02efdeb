//! Accounts' secrets: password hashing and access-token signing.
pub mod common_passwords;
pub mod opaque;
pub mod password;
pub mod throttle;
pub mod token;
