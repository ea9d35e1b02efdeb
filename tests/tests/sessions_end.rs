//! A password reset or change ends every session: refresh tokens made before it are
//! refused even when its revocation missed them (the login race), open log follows end,
//! and, when asked, every API key is revoked; the "password changed" mail counts the keys
//! still live.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use souq_tests::{TestCluster, mail};

const PW: &str = "first secret phrase";
const NEW_PW: &str = "second secret phrase";
const PATIENCE: Duration = Duration::from_secs(20);
const CHANGED: &str = "Your Souq password was changed";

/// Signs a fresh user up, confirms the address from the real mail and logs in; returns
/// the address and the login's answer.
async fn verified(c: &TestCluster) -> (String, Value) {
    let email = TestCluster::email();
    let (s, r) = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": PW})).await;
    assert_eq!(s, 202, "{r}");
    let mails = mail::wait_for(&email, 1, PATIENCE).await;
    let link = mail::link_containing(&mails[0].text, "/api/v1/auth/verify-email/").expect("no verify link");
    assert_eq!(c.http.get(&link).send().await.unwrap().status(), 200);
    let (s, session) = c.post("/api/v1/auth/login", None, json!({"email": email, "password": PW})).await;
    assert_eq!(s, 200, "{session}");
    (email, session)
}

fn access(session: &Value) -> String {
    session["access_token"].as_str().unwrap().to_owned()
}

async fn refresh(c: &TestCluster, token: &Value) -> (u16, Value) {
    c.post("/api/v1/auth/refresh", None, json!({"refresh_token": token})).await
}

/// The "password changed" mails `email` has received, oldest first.
async fn changed_mails(email: &str, n: usize) -> Vec<mail::Mail> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mails: Vec<mail::Mail> = mail::all_for(email).into_iter().filter(|m| m.subject == CHANGED).collect();
        if mails.len() >= n {
            return mails;
        }
        assert!(tokio::time::Instant::now() < deadline, "{n} password-changed mails did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_refresh_token_made_before_a_password_change_is_refused_even_if_not_revoked() {
    let c = TestCluster::builder().agents(0).start().await;
    let (email, before) = verified(&c).await;
    c.clock.advance(Duration::from_secs(5));
    let body = json!({"current_password": PW, "new_password": NEW_PW});
    let (s, r) = c.post("/api/v1/auth/change-password", Some(&access(&before)), body).await;
    assert_eq!(s, 200, "{r}");

    // The login race, its ordering written out: a login in flight during the change mints
    // its refresh token after the change revoked the others, so the revocation missed it.
    let db = souq_control_plane::connect(&c.database_url).await.unwrap();
    db.execute_unprepared("UPDATE refresh_tokens SET revoked_at = NULL").await.unwrap();
    let (s, p) = refresh(&c, &before["refresh_token"]).await;
    assert_eq!((s, p["type"].as_str()), (401, Some("urn:souq:problem:unauthenticated")), "{p}");

    // A session begun after the change, in the very same second, lives on and rotates.
    let (s, after) = c.post("/api/v1/auth/login", None, json!({"email": email, "password": NEW_PW})).await;
    assert_eq!(s, 200, "{after}");
    let (s, second) = refresh(&c, &after["refresh_token"]).await;
    assert_eq!(s, 200, "{second}");
    let (s, third) = refresh(&c, &second["refresh_token"]).await;
    assert_eq!(s, 200, "{third}");
    assert_eq!(c.get("/api/v1/auth/me", Some(&access(&third))).await.0, 200);
    c.stop().await;
}

#[tokio::test]
async fn a_change_or_reset_can_revoke_every_api_key_and_its_mail_counts_the_live_ones() {
    let c = TestCluster::builder().agents(0).start().await;
    let (email, session) = verified(&c).await;
    let token = access(&session);
    for name in ["first", "second"] {
        let (s, r) = c.post("/api/v1/keys", Some(&token), json!({"name": name})).await;
        assert_eq!(s, 201, "{r}");
    }

    // A plain change leaves the keys alone, and the mail says two are live.
    let (s, r) = c.post("/api/v1/auth/change-password", Some(&token), json!({"current_password": PW, "new_password": NEW_PW})).await;
    assert_eq!(s, 200, "{r}");
    let mails = changed_mails(&email, 1).await;
    assert!(mails[0].text.contains("API keys still live on this account: 2."), "{}", mails[0].text);
    let (_, fresh) = c.post("/api/v1/auth/login", None, json!({"email": email, "password": NEW_PW})).await;
    let token = access(&fresh);
    let (s, keys) = c.get("/api/v1/keys", Some(&token)).await;
    assert_eq!(s, 200, "{keys}");
    assert!(keys["keys"].as_array().unwrap().iter().all(|k| k["revoked_at"].is_null()), "{keys}");

    // A reset that asks for it revokes them all, and the mail says none is live.
    let (s, _) = c.post("/api/v1/auth/forgot-password", None, json!({"email": email})).await;
    assert_eq!(s, 202);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let reset_token = loop {
        let found = mail::all_for(&email).iter().find_map(|m| mail::link_containing(&m.text, "/reset-password#token="));
        if let Some(link) = found {
            break link.rsplit('=').next().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no reset mail");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body = json!({"token": reset_token, "password": "third secret phrase", "revoke_api_keys": true});
    let (s, r) = c.post("/api/v1/auth/reset-password", None, body).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["message"].as_str().unwrap().contains("2 API keys are revoked"), "{r}");
    let mails = changed_mails(&email, 2).await;
    assert!(mails[1].text.contains("API keys still live on this account: 0."), "{}", mails[1].text);
    let (_, fresh) = c.post("/api/v1/auth/login", None, json!({"email": email, "password": "third secret phrase"})).await;
    let (s, keys) = c.get("/api/v1/keys", Some(&access(&fresh))).await;
    assert_eq!(s, 200, "{keys}");
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k["revoked_at"].is_string()), "{keys:?}");

    // A change may ask for it too; with no key left it revokes nothing.
    let body = json!({"current_password": "third secret phrase", "new_password": NEW_PW, "revoke_api_keys": true});
    let (s, r) = c.post("/api/v1/auth/change-password", Some(&access(&fresh)), body).await;
    assert_eq!(s, 200, "{r}");
    let body = json!({"current_password": NEW_PW, "new_password": PW, "revoke_api_keys": "yes"});
    let (_, again) = c.post("/api/v1/auth/login", None, json!({"email": email, "password": NEW_PW})).await;
    let (s, p) = c.post("/api/v1/auth/change-password", Some(&access(&again)), body).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("revoke_api_keys")), "{p}");
    c.stop().await;
}

/// Prints a line on every call.
const PRINTER: &str = r#"
def handler(event):
    print("a line for the follow", flush=True)
    return "printed"
"#;

#[tokio::test]
async fn an_open_log_follow_ends_when_the_password_changes() {
    let c = TestCluster::builder().start().await;
    let (_, session) = verified(&c).await;
    let token = access(&session);
    let api = c.create_api(&token, "Printer", "python", PRINTER).await;
    c.deploy(&token, &api, json!({})).await;
    c.call_ok(&token, &api, "/").await;

    let mut follow = c
        .http
        .get(format!("{}/api/v1/apis/{}/logs?follow=true&tail=1", c.url, api.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let (s, r) = c.post("/api/v1/auth/change-password", Some(&token), json!({"current_password": PW, "new_password": NEW_PW})).await;
    assert_eq!(s, 200, "{r}");
    // The follow would stay open for an hour; it ends once the edge learns of the change.
    let mut seen = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = follow.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the follow is still open: {seen}");
    assert!(seen.contains("event: error") && seen.contains("urn:souq:problem:unauthenticated"), "{seen}");
    c.stop().await;
}
