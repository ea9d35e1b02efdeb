//! Accounts' secrets: password hashing and access-token signing.
pub mod password;
pub mod token;
