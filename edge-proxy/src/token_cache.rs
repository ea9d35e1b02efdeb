//! A bounded cache of verified access tokens, so a client that calls many times pays for
//! one signature check. Keys are SHA-256 digests: no token is kept in memory. A hit is
//! still checked against the token's expiry and, by the caller, its user's revocations.
use std::{collections::HashMap, sync::RwLock};

use sha2::{Digest, Sha256};

/// Tokens remembered at most; beyond it, expired entries go, and if none had, all do.
pub const CAPACITY: usize = 10_000;

/// What a verified token said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The user id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Verified tokens by digest.
#[derive(Debug)]
pub struct TokenCache {
    entries: RwLock<HashMap<[u8; 32], Verified>>,
    capacity: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::with_capacity(CAPACITY)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// A cache of at most `capacity` tokens.
    pub fn with_capacity(capacity: usize) -> Self {
        TokenCache { entries: RwLock::default(), capacity: capacity.max(1) }
    }

    /// What `token` was verified to say, if it was and has not expired by `now`.
    pub fn get(&self, token: &str, now: u64) -> Option<Verified> {
        let key = digest(token);
        let entries = self.entries.read().ok()?;
        entries.get(&key).filter(|v| v.exp > now).cloned()
    }

    /// Remembers a verified token.
    pub fn insert(&self, token: &str, verified: Verified, now: u64) {
        let key = digest(token);
        let Ok(mut entries) = self.entries.write() else { return };
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, v| v.exp > now);
            if entries.len() >= self.capacity {
                // Rare: as many live tokens as the cache holds. Starting over is cheap and
                // keeps the bound without tracking use order on the hot path.
                entries.clear();
            }
        }
        entries.insert(key, verified);
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.entries.read().map_or(0, |e| e.len())
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(sub: &str, exp: u64) -> Verified {
        Verified { sub: sub.into(), iat: 1, exp }
    }

    #[test]
    fn hits_until_expiry() {
        let c = TokenCache::default();
        c.insert("t1", v("u1", 100), 10);
        assert_eq!(c.get("t1", 50).map(|v| v.sub), Some("u1".into()));
        assert_eq!(c.get("t1", 100), None);
        assert_eq!(c.get("t2", 50), None);
    }

    #[test]
    fn stays_within_its_bound() {
        let c = TokenCache::with_capacity(3);
        c.insert("a", v("u", 20), 0);
        c.insert("b", v("u", 100), 0);
        c.insert("c", v("u", 100), 0);
        // Full: the expired entry goes first.
        c.insert("d", v("u", 100), 30);
        assert_eq!(c.len(), 3);
        assert!(c.get("a", 0).is_none() && c.get("d", 30).is_some());
        // Full of live tokens: start over.
        c.insert("e", v("u", 100), 30);
        assert_eq!(c.len(), 1);
        assert!(c.get("e", 30).is_some());
    }
}
