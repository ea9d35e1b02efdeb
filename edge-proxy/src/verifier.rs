//! Local verification of access tokens with the control plane's Ed25519 public key,
//! fetched once at start (and retried until the control plane answers).
use std::{
    collections::HashMap,
    sync::{OnceLock, RwLock},
    time::Duration,
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use souq_proto::{
    Claims,
    accounts::{GetVerifyingKeyRequest, ListRevocationsRequest, accounts_client::AccountsClient},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::{
    error::{ApiError, Result},
    token_cache::{TokenCache, Verified},
};

/// Verifies tokens once the key is known, and refuses tokens issued before their user's
/// revocation cut-off.
#[derive(Default)]
pub struct Verifier {
    key: OnceLock<(DecodingKey, Validation)>,
    /// user id → access tokens with `iat` before this are void.
    revoked: RwLock<HashMap<String, u64>>,
    /// Tokens already verified.
    cache: TokenCache,
}

/// Seconds since the epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Verifier {
    /// A verifier that already holds its key, for tests that sign their own tokens.
    #[cfg(test)]
    pub(crate) fn with_key(key: DecodingKey, validation: Validation) -> Self {
        let v = Verifier::default();
        let _ = v.key.set((key, validation));
        v
    }

    /// Whether the key has been fetched.
    pub fn ready(&self) -> bool {
        self.key.get().is_some()
    }

    /// Verifies `token`, returning its subject. A token verified before is answered from
    /// the cache until it expires; revocations apply to cached tokens all the same.
    pub fn verify(&self, token: &str) -> Result<String> {
        let (key, validation) = self.key.get().ok_or_else(|| {
            ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the edge is not ready yet")
        })?;
        let bad = || ApiError::unauthenticated("invalid or expired token");
        let now = unix_now();
        let verified = match self.cache.get(token, now) {
            Some(v) => v,
            None => {
                let claims = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|_| bad())?.claims;
                let v = Verified { sub: claims.sub, iat: claims.iat, exp: claims.exp };
                self.cache.insert(token, v.clone(), now);
                v
            }
        };
        let cut = self.revoked.read().ok().and_then(|r| r.get(&verified.sub).copied());
        if cut.is_some_and(|cut| verified.iat < cut) {
            return Err(bad());
        }
        Ok(verified.sub)
    }

    /// `user_id`'s revocation cut-off (tokens issued before it are void); 0 when none.
    /// It only grows: a follow that saw it grow knows its session was ended.
    pub fn cut_off(&self, user_id: &str) -> u64 {
        self.revoked.read().ok().and_then(|r| r.get(user_id).copied()).unwrap_or(0)
    }

    /// Records that `user_id`'s tokens issued before `not_before` are void.
    pub fn revoke(&self, user_id: String, not_before: u64) {
        if let Ok(mut r) = self.revoked.write() {
            let e = r.entry(user_id).or_insert(0);
            *e = (*e).max(not_before);
        }
    }

    /// Polls the control plane for revocations every `every` until `shutdown`.
    pub async fn follow_revocations(
        &self,
        mut client: AccountsClient<Channel>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut since = 0u64;
        loop {
            let mut req = tonic::Request::new(ListRevocationsRequest { since_unix_ms: since });
            req.set_timeout(Duration::from_secs(5));
            match client.list_revocations(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    for r in resp.entries {
                        self.revoke(r.user_id, r.not_before);
                    }
                    since = resp.now_unix_ms;
                }
                Err(status) => warn!(code = ?status.code(), "could not fetch revocations"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Fetches the key from the control plane, retrying until it answers or `shutdown`.
    pub async fn fetch(&self, mut client: AccountsClient<Channel>, shutdown: CancellationToken) {
        let mut wait = Duration::from_millis(100);
        while self.key.get().is_none() {
            let mut req = tonic::Request::new(GetVerifyingKeyRequest {});
            req.set_timeout(Duration::from_secs(3));
            match client.get_verifying_key(req).await {
                Ok(resp) => {
                    let k = resp.into_inner();
                    let mut v = Validation::new(Algorithm::EdDSA);
                    v.set_issuer(&[k.issuer]);
                    v.set_audience(&[k.audience]);
                    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                    v.leeway = 5;
                    let _ = self.key.set((DecodingKey::from_ed_der(&k.ed25519_public), v));
                    info!("token verifying key loaded");
                }
                Err(status) => {
                    warn!(code = ?status.code(), "control plane not answering yet; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
