//! Opaque secrets (mail tokens, refresh tokens): 256 random bits, shown once as hex and
//! stored only as their SHA-256.
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Length of a token in hex characters.
pub const TOKEN_HEX_LEN: usize = 64;

/// A new token and the hash to store.
pub fn generate() -> Result<(String, String)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("getrandom: {e}")))?;
    let raw = hex::encode(bytes);
    let h = hash(&raw);
    Ok((raw, h))
}

/// The stored form of a token.
pub fn hash(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

/// Whether `raw` has the shape of a token Souq issues.
pub fn well_formed(raw: &str) -> bool {
    raw.len() == TOKEN_HEX_LEN && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_hashed() {
        let (a, ha) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert_ne!(a, b);
        assert!(well_formed(&a));
        assert_eq!(hash(&a), ha);
        assert_ne!(a, ha);
        assert!(!well_formed("short"));
        assert!(!well_formed(&"G".repeat(64)));
    }
}
