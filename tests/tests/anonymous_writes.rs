//! Anonymous writes and mail abuse: signups and forgotten-password requests are limited
//! per client address and in all (429 with `Retry-After`); a flood of throttled logins is
//! tallied in the audit log, not written a row each; audit rows past the retention go;
//! mail to an unconfirmed address carries no name chosen by whoever signed up.
#![allow(clippy::unwrap_used)]

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use souq_control_plane::accounts::{FORGOT_LIMIT, SIGNUP_LIMIT};
use souq_tests::{TestCluster, mail};
use tokio::{sync::Semaphore, task::JoinSet};

const PW: &str = "first secret phrase";

/// A client whose connections come from `127.0.a.b`.
fn from(a: u8, b: u8) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, a, b))).build().unwrap()
}

/// POSTs `body` to `path` `n` times from `client`, 32 at a time; returns the statuses.
async fn flood(c: &TestCluster, client: &reqwest::Client, path: &str, body: Value, n: usize) -> Vec<u16> {
    let gate = Arc::new(Semaphore::new(32));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (gate, client, body) = (gate.clone(), client.clone(), body.clone());
        let url = format!("{}{path}", c.url);
        set.spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            client.post(url).json(&body).send().await.unwrap().status().as_u16()
        });
    }
    set.join_all().await
}

/// The status, `Retry-After` and problem of one POST.
async fn post_from(c: &TestCluster, client: &reqwest::Client, path: &str, body: Value) -> (u16, Option<u64>, Value) {
    let r = client.post(format!("{}{path}", c.url)).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn assert_limited((status, retry, problem): &(u16, Option<u64>, Value)) {
    assert_eq!(*status, 429, "{problem}");
    assert!(retry.is_some_and(|s| (1..=3600).contains(&s)), "{retry:?}");
    assert_eq!(problem["type"], "urn:souq:problem:rate-limited", "{problem}");
}

#[tokio::test]
async fn signups_are_limited_per_client_and_in_all() {
    let c = TestCluster::builder().agents(0).start().await;
    let per_client = SIGNUP_LIMIT.per_client as usize;
    let clients = SIGNUP_LIMIT.global as usize / per_client;
    // Requests count before their fields are checked: refused passwords fill the window
    // without costing a hash each.
    let bad = json!({"email": "flood@example.com", "password": "short"});
    for b in 1..=u8::try_from(clients).unwrap() {
        let statuses = flood(&c, &from(5, b), "/api/v1/auth/signup", bad.clone(), per_client).await;
        assert!(statuses.iter().all(|s| *s == 422), "{statuses:?}");
    }
    let good = json!({"email": TestCluster::email(), "password": PW});
    assert_limited(&post_from(&c, &from(5, 1), "/api/v1/auth/signup", good.clone()).await);
    assert_limited(&post_from(&c, &from(5, 200), "/api/v1/auth/signup", good).await);
    c.stop().await;

    // Per client, on a fresh cluster: one address is cut off, another is not.
    let c = TestCluster::builder().agents(0).start().await;
    let statuses = flood(&c, &from(6, 1), "/api/v1/auth/signup", bad, per_client).await;
    assert!(statuses.iter().all(|s| *s == 422), "{statuses:?}");
    let good = json!({"email": TestCluster::email(), "password": PW});
    assert_limited(&post_from(&c, &from(6, 1), "/api/v1/auth/signup", good.clone()).await);
    assert_eq!(post_from(&c, &from(6, 2), "/api/v1/auth/signup", good.clone()).await.0, 202);
    // The window ends.
    c.clock.advance(Duration::from_secs(3601));
    let good = json!({"email": TestCluster::email(), "password": PW});
    assert_eq!(post_from(&c, &from(6, 1), "/api/v1/auth/signup", good).await.0, 202);
    c.stop().await;
}

#[tokio::test]
async fn forgotten_password_requests_are_limited_per_client_and_in_all() {
    let c = TestCluster::builder().agents(0).start().await;
    let per_client = FORGOT_LIMIT.per_client as usize;
    let body = json!({"email": TestCluster::email()});
    let statuses = flood(&c, &from(7, 1), "/api/v1/auth/forgot-password", body.clone(), per_client).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert_limited(&post_from(&c, &from(7, 1), "/api/v1/auth/forgot-password", body.clone()).await);
    assert_eq!(post_from(&c, &from(7, 2), "/api/v1/auth/forgot-password", body.clone()).await.0, 202);
    // Everybody together: the rest of the global window from other addresses.
    let mut left = FORGOT_LIMIT.global as usize - per_client - 1;
    let mut b = 3;
    while left > 0 {
        let n = left.min(per_client);
        let statuses = flood(&c, &from(7, b), "/api/v1/auth/forgot-password", body.clone(), n).await;
        assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
        left -= n;
        b += 1;
    }
    assert_limited(&post_from(&c, &from(7, 250), "/api/v1/auth/forgot-password", body).await);
    c.stop().await;
}

/// Rows of the audit log, as (event, detail).
async fn audit_rows(db: &DatabaseConnection, filter: &str) -> Vec<(String, Value)> {
    let sql = format!("SELECT event, detail FROM audit_log {filter}");
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap();
    rows.iter()
        .map(|r| {
            let event: String = r.try_get("", "event").unwrap();
            let detail: String = r.try_get("", "detail").unwrap();
            (event, serde_json::from_str(&detail).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn throttled_logins_are_tallied_not_written_a_row_each() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    assert_eq!(c.post("/api/v1/auth/signup", None, json!({"email": email, "password": PW})).await.0, 202);
    let client = from(8, 1);
    let wrong = json!({"email": email, "password": "a wrong guess"});
    let statuses = flood(&c, &client, "/api/v1/auth/login", wrong, 205).await;
    let refused = statuses.iter().filter(|s| **s == 429).count() as u64;
    assert!(refused >= 190, "{statuses:?}");

    let db = souq_control_plane::connect(&c.database_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let tallied = loop {
        let rows = audit_rows(&db, "WHERE event = 'login_failure'").await;
        let throttled: Vec<Value> = rows.into_iter().map(|(_, d)| d).filter(|d| d["reason"] == "throttled").collect();
        let attempts: u64 = throttled.iter().map(|d| d["attempts"].as_u64().unwrap_or(1)).sum();
        if attempts >= refused {
            assert_eq!(attempts, refused, "{throttled:?}");
            break throttled;
        }
        assert!(tokio::time::Instant::now() < deadline, "the tally never arrived: {throttled:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(tallied.len() <= 3, "{} rows for {refused} throttled logins: {tallied:?}", tallied.len());
    c.stop().await;
}

#[tokio::test]
async fn audit_rows_past_the_retention_are_deleted() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    assert_eq!(c.post("/api/v1/auth/signup", None, json!({"email": email, "password": PW})).await.0, 202);
    let db = souq_control_plane::connect(&c.database_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while audit_rows(&db, "WHERE event = 'signup'").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no signup row");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 91 days later (the default retention is 90), the signup row goes; a new row stays.
    c.clock.advance(Duration::from_secs(91 * 24 * 3600));
    assert_eq!(c.post("/api/v1/auth/login", None, json!({"email": email, "password": PW})).await.0, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !audit_rows(&db, "WHERE event = 'signup'").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the old row is still there");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(audit_rows(&db, "WHERE event = 'login'").await.len(), 1, "the new row stays");
    c.stop().await;
}

#[tokio::test]
async fn mail_to_an_unconfirmed_address_carries_no_chosen_name() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    let name = "Claim your prize at evil.example";
    let (s, _) = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": PW, "name": name})).await;
    assert_eq!(s, 202);
    // A second signup with the same address: the "already registered" mail.
    let (s, _) = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": PW, "name": name})).await;
    assert_eq!(s, 202);
    let (s, _) = c.post("/api/v1/auth/forgot-password", None, json!({"email": email})).await;
    assert_eq!(s, 202);
    let mails = mail::wait_for(&email, 3, Duration::from_secs(20)).await;
    for m in &mails {
        assert!(!m.text.contains("evil.example") && !m.html.contains("evil.example"), "{}: {}", m.subject, m.text);
        assert!(m.text.starts_with("Hello,\n"), "{}", m.text);
    }
    // Once the owner confirms the address, the name is theirs to see.
    let link = mails.iter().find_map(|m| mail::link_containing(&m.text, "/verify-email/")).unwrap();
    assert_eq!(c.http.get(&link).send().await.unwrap().status(), 200);
    let mails = mail::wait_for(&email, 4, Duration::from_secs(20)).await;
    assert!(mails[3].text.contains(name), "{}", mails[3].text);
    c.stop().await;
}
