//! Access tokens: EdDSA (Ed25519) JWTs with iss, aud, sub, iat, exp and jti. The signing
//! key lives in a PKCS#8 PEM file, made on first start when it does not exist.
use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};

use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use souq_proto::{
    Claims, Kind,
    claims::{AUDIENCE, ISSUER},
};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Signs and verifies Souq access tokens.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    public: [u8; 32],
    ttl: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads the key at `path`, or makes a new one there (mode 0600) if none exists.
    pub fn load_or_create(path: &Path, ttl: Duration) -> Result<Self> {
        let key = if path.exists() {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| Error::Internal(format!("read {}: {e}", path.display())))?;
            SigningKey::from_pkcs8_pem(&pem)
                .map_err(|e| Error::Internal(format!("{} is not an Ed25519 PKCS#8 key: {e}", path.display())))?
        } else {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| Error::Internal(format!("getrandom: {e}")))?;
            let key = SigningKey::from_bytes(&seed);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| Error::Internal(format!("encode key: {e}")))?;
            write_private(path, pem.as_bytes())?;
            key
        };
        Self::from_key(&key, ttl)
    }

    fn from_key(key: &SigningKey, ttl: Duration) -> Result<Self> {
        let der = key.to_pkcs8_der().map_err(|e| Error::Internal(format!("encode key: {e}")))?;
        let public = key.verifying_key().to_bytes();
        Ok(TokenSigner {
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            decoding: DecodingKey::from_ed_der(&public),
            public,
            ttl,
        })
    }

    /// The raw Ed25519 public key, for the edge.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// How long an access token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues an access token for `user_id`, stamped issued at `iat` and expiring one
    /// lifetime after `now`.
    pub fn issue(&self, user_id: Uuid, iat: DateTime<Utc>, now: DateTime<Utc>) -> Result<String> {
        let secs = |t: DateTime<Utc>| u64::try_from(t.timestamp()).unwrap_or(0);
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user_id.to_string(),
            iat: secs(iat),
            exp: secs(now) + self.ttl.as_secs(),
            jti: Uuid::now_v7().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("sign token: {e}")))
    }

    /// Verifies a token's signature, issuer, audience and expiry; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[ISSUER]);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = 5;
        let bad = || Error::kind(Kind::Unauthenticated, "invalid or expired token");
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map(|d| d.claims).map_err(|_| bad())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Internal(format!("create {}: {e}", path.display())))?;
    f.write_all(bytes).map_err(|e| Error::Internal(format!("write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_verifies_and_rejects_tampering() {
        let dir = std::env::temp_dir().join(format!("souq-key-{}", Uuid::new_v4()));
        let path = dir.join("jwt.pem");
        let signer = TokenSigner::load_or_create(&path, Duration::from_secs(900)).unwrap();
        let user = Uuid::new_v4();
        let now = Utc::now();
        let token = signer.issue(user, now, now).unwrap();
        assert_eq!(signer.verify(&token).unwrap().sub, user.to_string());

        // The same file gives the same key.
        let again = TokenSigner::load_or_create(&path, Duration::from_secs(900)).unwrap();
        assert_eq!(again.verify(&token).unwrap().sub, user.to_string());
        // Expired an hour ago.
        let old = now - chrono::Duration::hours(2);
        assert!(signer.verify(&signer.issue(user, old, old).unwrap()).is_err());

        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(signer.verify(&tampered).is_err());
        assert!(signer.verify("not.a.jwt").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
