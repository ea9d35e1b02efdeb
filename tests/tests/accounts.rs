//! Account flows end to end over a real SMTP server: verification, reset, change,
//! refresh rotation, throttling, enumeration safety, and the audit log.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::{Value, json};
use souq_tests::{TestCluster, mail};

const PW: &str = "first secret phrase";
const PATIENCE: Duration = Duration::from_secs(15);

async fn signup(c: &TestCluster, email: &str, extra: Value) -> (u16, String) {
    let mut body = json!({"email": email, "password": PW});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let resp = c.http.post(format!("{}/api/v1/auth/signup", c.url)).json(&body).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn login(c: &TestCluster, email: &str, pw: &str) -> (u16, Value) {
    c.post("/api/v1/auth/login", None, json!({"email": email, "password": pw})).await
}

fn token_of(link: &str) -> String {
    link.rsplit(['/', '=']).next().unwrap().to_owned()
}

#[tokio::test]
async fn signup_mail_verify_link_welcome_in_arabic() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    let resp = c
        .http
        .post(format!("{}/api/v1/auth/signup", c.url))
        .header("accept-language", "ar-EG,ar;q=0.9,en;q=0.5")
        .json(&json!({"email": email, "password": PW, "name": "سلمى"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let mails = mail::wait_for(&email, 1, PATIENCE).await;
    let verify = &mails[0];
    assert!(verify.html.contains(r#"dir="rtl""#), "{}", verify.html);
    assert!(verify.html.contains(r#"lang="ar""#));
    assert!(!verify.text.is_empty() && !verify.html.is_empty());
    let link = mail::link_containing(&verify.text, "/api/v1/auth/verify-email/").expect("no verify link");
    assert!(link.starts_with(&c.url), "the link must come from the configured public URL: {link}");

    let (_, login_body) = login(&c, &email, PW).await;
    let access = login_body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(login_body["user"]["email_verified"], false, "unverified users can log in");

    let r = c.http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mails = mail::wait_for(&email, 2, PATIENCE).await;
    assert!(mails[1].html.contains(r#"dir="rtl""#), "the welcome mail is Arabic too");
    let (_, me) = c.get("/api/v1/auth/me", Some(&access)).await;
    assert_eq!(me["user"]["email_verified"], true);
    assert_eq!(me["user"]["locale"], "ar");

    // The link works once.
    let (s, p) = c.get(link.trim_start_matches(&c.url), None).await;
    assert_eq!((s, p["type"].as_str()), (410, Some("urn:souq:problem:token-used")), "{p}");
    let (s, p) = c.get(&format!("/api/v1/auth/verify-email/{}", "ab".repeat(32)), None).await;
    assert_eq!((s, p["type"].as_str()), (400, Some("urn:souq:problem:token-unknown")), "{p}");
    let (s, p) = c.get("/api/v1/auth/verify-email/not-a-token", None).await;
    assert_eq!((s, p["type"].as_str()), (400, Some("urn:souq:problem:token-malformed")), "{p}");
    c.stop().await;
}

#[tokio::test]
async fn verification_link_expires_after_a_day() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    signup(&c, &email, json!({})).await;
    let mails = mail::wait_for(&email, 1, PATIENCE).await;
    let link = mail::link_containing(&mails[0].text, "/verify-email/").unwrap();
    c.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let (s, p) = c.get(link.trim_start_matches(&c.url), None).await;
    assert_eq!((s, p["type"].as_str()), (410, Some("urn:souq:problem:token-expired")), "{p}");
    c.stop().await;
}

#[tokio::test]
async fn signup_and_forgot_answer_byte_identically_for_taken_and_unknown_addresses() {
    let c = TestCluster::builder().agents(0).start().await;
    let taken = TestCluster::email();
    let first = signup(&c, &taken, json!({})).await;
    let again = signup(&c, &taken, json!({"password": "a different phrase"})).await;
    let fresh = signup(&c, &TestCluster::email(), json!({})).await;
    assert_eq!(first.0, 202);
    assert_eq!(first, again);
    assert_eq!(first, fresh);
    // The existing address is told, without a link, that someone tried.
    let mails = mail::wait_for(&taken, 2, PATIENCE).await;
    assert!(mails[1].subject != mails[0].subject, "{:?}", mails.iter().map(|m| &m.subject).collect::<Vec<_>>());
    assert!(mail::link_containing(&mails[1].text, "/verify-email/").is_none());

    let forgot = |email: String| {
        let http = c.http.clone();
        let url = format!("{}/api/v1/auth/forgot-password", c.url);
        async move {
            let r = http.post(url).json(&json!({"email": email})).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let known = forgot(taken.clone()).await;
    let unknown = forgot(TestCluster::email()).await;
    assert_eq!(known.0, 202);
    assert_eq!(known, unknown);
    c.stop().await;
}

#[tokio::test]
async fn forgot_reset_voids_old_password_and_sessions() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    signup(&c, &email, json!({})).await;
    let (_, session) = login(&c, &email, PW).await;
    let old_access = session["access_token"].as_str().unwrap().to_owned();
    let old_refresh = session["refresh_token"].as_str().unwrap().to_owned();

    let forgot = json!({"email": email});
    assert_eq!(c.post("/api/v1/auth/forgot-password", None, forgot.clone()).await.0, 202);
    let mails = mail::wait_for(&email, 2, PATIENCE).await;
    let first_link = mail::link_containing(&mails[1].text, "/reset-password#token=").expect("no reset link");
    let first = token_of(&first_link);
    assert!(mails[1].text.contains(&first), "the token is in the mail for API use");

    // A newer request voids the older token.
    c.clock.advance(Duration::from_secs(61));
    c.post("/api/v1/auth/forgot-password", None, forgot).await;
    let mails = mail::wait_for(&email, 3, PATIENCE).await;
    let second = token_of(&mail::link_containing(&mails[2].text, "/reset-password#token=").unwrap());
    let (s, p) = c.post("/api/v1/auth/reset-password", None, json!({"token": first, "password": "second phrase here"})).await;
    assert_eq!((s, p["type"].as_str()), (410, Some("urn:souq:problem:token-used")), "{p}");

    // A bad password is refused without burning the token.
    let (s, p) = c.post("/api/v1/auth/reset-password", None, json!({"token": second, "password": "short"})).await;
    assert_eq!((s, p["field"].as_str()), (422, Some("password")), "{p}");
    let (s, p) = c.post("/api/v1/auth/reset-password", None, json!({"token": second, "password": "second phrase here"})).await;
    assert_eq!(s, 200, "{p}");
    assert!(p.get("access_token").is_none(), "a reset does not log in");

    assert_eq!(login(&c, &email, PW).await.0, 401, "the old password is refused");
    assert_eq!(login(&c, &email, "second phrase here").await.0, 200);
    assert_eq!(c.get("/api/v1/auth/me", Some(&old_access)).await.0, 401, "old access tokens are refused");
    assert_eq!(c.post("/api/v1/auth/refresh", None, json!({"refresh_token": old_refresh})).await.0, 401);
    let (s, _) = c.post("/api/v1/auth/reset-password", None, json!({"token": second, "password": "third phrase here"})).await;
    assert_eq!(s, 410, "a reset token works once");

    // Reset tokens last one hour.
    c.clock.advance(Duration::from_secs(61));
    c.post("/api/v1/auth/forgot-password", None, json!({"email": email})).await;
    // The reset also sent a "password changed" mail; the new reset link is the last one.
    let mails = mail::wait_for(&email, 5, PATIENCE).await;
    assert_eq!(mails.iter().filter(|m| m.subject == "Your Souq password was changed").count(), 1);
    let third = token_of(&mails.iter().rev().find_map(|m| mail::link_containing(&m.text, "/reset-password#token=")).unwrap());
    c.clock.advance(Duration::from_secs(3601));
    let (s, p) = c.post("/api/v1/auth/reset-password", None, json!({"token": third, "password": "third phrase here"})).await;
    assert_eq!((s, p["type"].as_str()), (410, Some("urn:souq:problem:token-expired")), "{p}");
    c.stop().await;
}

#[tokio::test]
async fn change_password_needs_the_current_one_and_revokes_sessions() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    signup(&c, &email, json!({})).await;
    let (_, session) = login(&c, &email, PW).await;
    let access = session["access_token"].as_str().unwrap().to_owned();
    let refresh = session["refresh_token"].as_str().unwrap().to_owned();

    let (s, p) = c
        .post("/api/v1/auth/change-password", Some(&access), json!({"current_password": "wrong one!", "new_password": "new phrase here"}))
        .await;
    assert_eq!(s, 403, "{p}");
    let (s, p) = c
        .post("/api/v1/auth/change-password", Some(&access), json!({"current_password": PW, "new_password": "short"}))
        .await;
    assert_eq!((s, p["field"].as_str()), (422, Some("new_password")), "{p}");
    let (s, p) = c
        .post("/api/v1/auth/change-password", Some(&access), json!({"current_password": PW, "new_password": "new phrase here"}))
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(c.get("/api/v1/auth/me", Some(&access)).await.0, 401);
    assert_eq!(c.post("/api/v1/auth/refresh", None, json!({"refresh_token": refresh})).await.0, 401);
    let (s, fresh) = login(&c, &email, "new phrase here").await;
    assert_eq!(s, 200);
    assert_eq!(c.get("/api/v1/auth/me", Some(fresh["access_token"].as_str().unwrap())).await.0, 200);
    c.stop().await;
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    signup(&c, &email, json!({})).await;
    let (_, s1) = login(&c, &email, PW).await;
    let r1 = s1["refresh_token"].as_str().unwrap().to_owned();
    let (st, s2) = c.post("/api/v1/auth/refresh", None, json!({"refresh_token": r1})).await;
    assert_eq!(st, 200, "{s2}");
    let r2 = s2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(c.get("/api/v1/auth/me", Some(s2["access_token"].as_str().unwrap())).await.0, 200);

    // r1 was rotated: presenting it again is theft or a bug; the whole family dies.
    assert_eq!(c.post("/api/v1/auth/refresh", None, json!({"refresh_token": r1})).await.0, 401);
    assert_eq!(c.post("/api/v1/auth/refresh", None, json!({"refresh_token": r2})).await.0, 401);
    for bad in ["", "nonsense", &"0".repeat(64)] {
        assert_eq!(c.post("/api/v1/auth/refresh", None, json!({"refresh_token": bad})).await.0, 401);
    }
    // Another login is a new family and works.
    let (_, s3) = login(&c, &email, PW).await;
    assert_eq!(c.post("/api/v1/auth/refresh", None, json!({"refresh_token": s3["refresh_token"]})).await.0, 200);
    c.stop().await;
}

#[tokio::test]
async fn login_throttling_reaches_429_and_recovers() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    signup(&c, &email, json!({})).await;
    for _ in 0..5 {
        assert_eq!(login(&c, &email, "wrong password").await.0, 401);
    }
    let r = c.http.post(format!("{}/api/v1/auth/login", c.url)).json(&json!({"email": email, "password": PW})).send().await.unwrap();
    assert_eq!(r.status(), 429, "even the right password waits out the block");
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    c.clock.advance(Duration::from_secs(retry + 1));
    assert_eq!(login(&c, &email, PW).await.0, 200, "the owner gets back in once the block ends");
    c.stop().await;
}

#[tokio::test]
async fn audit_log_records_account_events_without_secrets() {
    use sea_orm::{ConnectionTrait, Statement};
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    signup(&c, &email, json!({})).await;
    let mails = mail::wait_for(&email, 1, PATIENCE).await;
    let link = mail::link_containing(&mails[0].text, "/verify-email/").unwrap();
    c.http.get(&link).send().await.unwrap();
    login(&c, &email, "wrong password").await;
    let (_, s) = login(&c, &email, PW).await;
    let access = s["access_token"].as_str().unwrap();
    c.post("/api/v1/auth/change-password", Some(access), json!({"current_password": PW, "new_password": "changed phrase"})).await;

    let db = souq_control_plane::connect(&c.database_url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), "SELECT event, detail, client_ip FROM audit_log"))
        .await
        .unwrap();
    let mut events = Vec::new();
    for row in &rows {
        let event: String = row.try_get("", "event").unwrap();
        let detail: String = row.try_get("", "detail").unwrap();
        for secret in [PW, "wrong password", "changed phrase", token_of(&link).as_str(), access] {
            assert!(!detail.contains(secret), "{event}: {detail}");
        }
        events.push(event);
    }
    for e in ["signup", "verify_email", "login_failure", "login", "password_change"] {
        assert!(events.iter().any(|x| x == e), "{e} missing from {events:?}");
    }
    c.stop().await;
}

#[tokio::test]
async fn the_edge_itself_refuses_revoked_tokens() {
    let mut c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    signup(&c, &email, json!({})).await;
    let (_, session) = login(&c, &email, PW).await;
    let old = session["access_token"].as_str().unwrap().to_owned();
    let (s, _) = c.post("/api/v1/auth/change-password", Some(&old), json!({"current_password": PW, "new_password": "a newer phrase"})).await;
    assert_eq!(s, 200);
    let (_, fresh) = login(&c, &email, "a newer phrase").await;
    let fresh = fresh["access_token"].as_str().unwrap().to_owned();
    // The test edge fetches revocations every 200 ms (10 s by default).
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.stop_control_plane().await;
    // With the control plane gone, only the edge can answer: it refuses the old token
    // itself, and passes the new one on (to a 503).
    assert_eq!(c.get("/api/v1/auth/me", Some(&old)).await.0, 401);
    assert_eq!(c.get("/api/v1/auth/me", Some(&fresh)).await.0, 503);
    c.stop().await;
}
