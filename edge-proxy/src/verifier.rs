//! Local verification of access tokens with the control plane's Ed25519 public key,
//! fetched once at start (and retried until the control plane answers).
use std::{sync::OnceLock, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use souq_proto::{Claims, platform::{GetVerifyingKeyRequest, platform_client::PlatformClient}};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::error::{ApiError, Result};

/// Verifies tokens once the key is known.
#[derive(Default)]
pub struct Verifier {
    key: OnceLock<(DecodingKey, Validation)>,
}

impl Verifier {
    /// Whether the key has been fetched.
    pub fn ready(&self) -> bool {
        self.key.get().is_some()
    }

    /// Verifies `token`, returning its subject.
    pub fn verify(&self, token: &str) -> Result<String> {
        let (key, validation) = self.key.get().ok_or_else(|| {
            ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the edge is not ready yet")
        })?;
        jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|d| d.claims.sub)
            .map_err(|_| ApiError::unauthenticated("invalid or expired token"))
    }

    /// Fetches the key from the control plane, retrying until it answers or `shutdown`.
    pub async fn fetch(&self, mut client: PlatformClient<Channel>, shutdown: CancellationToken) {
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
