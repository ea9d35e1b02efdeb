//! Forged and doctored access tokens are refused with 401 on every authenticated path.
#![allow(clippy::unwrap_used)]

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use souq_proto::accounts::{GetVerifyingKeyRequest, MeRequest, accounts_client::AccountsClient};
use souq_tests::TestCluster;

fn claims(sub: &str, iss: &str, aud: &str, exp_offset: i64) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    json!({"iss": iss, "aud": aud, "sub": sub, "iat": now - 10, "exp": now + exp_offset, "jti": "x"})
}

#[tokio::test]
async fn forged_tokens_are_401() {
    let c = TestCluster::builder().agents(0).start().await;
    let token = c.user().await;
    let (_, me) = c.get("/api/v1/auth/me", Some(&token)).await;
    let sub = me["user"]["id"].as_str().unwrap().to_owned();

    let pem = std::fs::read(c.data_dir.join("jwt.pem")).unwrap();
    let real = EncodingKey::from_ed_pem(&pem).unwrap();
    let sign = |c: &Value| jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), c, &real).unwrap();

    // The test signs correctly: a well-formed token is accepted.
    let good = sign(&claims(&sub, "souq", "souq-api", 600));
    assert_eq!(c.get("/api/v1/auth/me", Some(&good)).await.0, 200);

    let edge = c.issue(souq_proto::tls::Role::Edge, "edge");
    let mut cp = AccountsClient::new(TestCluster::channel(&edge, &c.control_plane_url, souq_proto::tls::Role::ControlPlane));
    let public = cp.get_verifying_key(GetVerifyingKeyRequest {}).await.unwrap().into_inner().ed25519_public;
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&sub, "souq", "souq-api", 600),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims(&sub, "souq", "souq-api", 600).to_string())
    );
    let tampered = {
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut body: Value = serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
        body["sub"] = json!(uuid::Uuid::new_v4().to_string());
        parts[1] = B64.encode(body.to_string());
        parts.join(".")
    };
    let forged = [
        ("alg none", none),
        ("HS256 keyed with the public key", hs256),
        ("wrong aud", sign(&claims(&sub, "souq", "other-api", 600))),
        ("wrong iss", sign(&claims(&sub, "evil", "souq-api", 600))),
        ("expired", sign(&claims(&sub, "souq", "souq-api", -120))),
        ("tampered payload", tampered),
    ];
    for (what, t) in &forged {
        let (s, p) = c.get("/api/v1/auth/me", Some(t)).await;
        assert_eq!(s, 401, "{what}: {p}");
        assert_eq!(p["type"], "urn:souq:problem:unauthenticated", "{what}");
        let (s, _) = c.post("/api/v1/execute", Some(t), json!({"runtime": "python", "code": "print(1)"})).await;
        assert_eq!(s, 401, "{what} on execute");
        // The control plane refuses it too, should a request ever bypass the edge.
        let mut req = tonic::Request::new(MeRequest {});
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        assert_eq!(cp.me(req).await.unwrap_err().code(), tonic::Code::Unauthenticated, "{what} at the control plane");
    }
    c.stop().await;
}
