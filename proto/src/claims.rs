//! The claims of a Souq access token: signed by the control plane, verified by the edge
//! and the control plane alike.
use serde::{Deserialize, Serialize};

/// The `iss` of every access token.
pub const ISSUER: &str = "souq";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "souq-api";

/// JWT claims of an access token (EdDSA / Ed25519).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer, always [`ISSUER`].
    pub iss: String,
    /// Audience, always [`AUDIENCE`].
    pub aud: String,
    /// The user's id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
}
