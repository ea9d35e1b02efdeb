//! Login throttling cannot be turned into a lockout: wrong passwords from one address
//! block that address for that account, not the owner logging in from another; a much
//! higher ceiling per account stops a swarm of addresses; a completed reset lifts every
//! block on the account.
#![allow(clippy::unwrap_used)]

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use serde_json::json;
use souq_tests::{TestCluster, mail};

const PW: &str = "first secret phrase";

/// A client whose connections come from `127.0.a.b`.
fn from(a: u8, b: u8) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::V4(Ipv4Addr::new(127, 0, a, b))).build().unwrap()
}

async fn login(c: &TestCluster, client: &reqwest::Client, email: &str, pw: &str) -> u16 {
    let r = client.post(format!("{}/api/v1/auth/login", c.url)).json(&json!({"email": email, "password": pw})).send().await.unwrap();
    let status = r.status().as_u16();
    if status == 429 {
        assert!(r.headers().contains_key("retry-after"));
    }
    status
}

#[tokio::test]
async fn an_attacker_at_one_address_cannot_lock_out_the_owner_at_another() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    let (s, r) = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": PW})).await;
    assert_eq!(s, 202, "{r}");
    let attacker = from(3, 66);
    let owner = from(3, 7);

    for _ in 0..5 {
        assert_eq!(login(&c, &attacker, &email, "a wrong guess").await, 401);
    }
    for _ in 0..20 {
        assert_eq!(login(&c, &attacker, &email, "a wrong guess").await, 429, "the attacker's address is blocked");
    }
    assert_eq!(login(&c, &attacker, &email, PW).await, 429, "even with the right password, from there");
    assert_eq!(login(&c, &owner, &email, PW).await, 200, "the owner, elsewhere, gets in");

    // One guess every 15 minutes keeps only the attacker's own address blocked.
    for _ in 0..4 {
        c.clock.advance(Duration::from_secs(15 * 60));
        login(&c, &attacker, &email, "a wrong guess").await;
        assert_eq!(login(&c, &owner, &email, PW).await, 200);
    }

    // A completed reset lifts the block, also for the address that caused it (an owner
    // behind the same NAT as the attacker).
    for _ in 0..10 {
        login(&c, &attacker, &email, "a wrong guess").await;
    }
    assert_eq!(login(&c, &attacker, &email, PW).await, 429);
    let (s, _) = c.post("/api/v1/auth/forgot-password", None, json!({"email": email})).await;
    assert_eq!(s, 202);
    let mails = mail::wait_for(&email, 2, Duration::from_secs(20)).await;
    let link = mails.iter().find_map(|m| mail::link_containing(&m.text, "/reset-password#token=")).expect("no reset mail");
    let token = link.rsplit('=').next().unwrap();
    let (s, r) = c.post("/api/v1/auth/reset-password", None, json!({"token": token, "password": "a brand new phrase"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(login(&c, &attacker, &email, "a brand new phrase").await, 200, "the reset lifted the block");
    c.stop().await;
}

#[tokio::test]
async fn a_swarm_of_addresses_meets_the_per_account_ceiling() {
    let c = TestCluster::builder().agents(0).start().await;
    let email = TestCluster::email();
    let (s, r) = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": PW})).await;
    assert_eq!(s, 202, "{r}");
    // 20 addresses, 5 guesses each: 100 guesses, the ceiling, all evaluated.
    let mut evaluated = 0;
    for b in 1..=20 {
        let client = from(4, b);
        for _ in 0..5 {
            if login(&c, &client, &email, "a wrong guess").await == 401 {
                evaluated += 1;
            }
        }
    }
    assert_eq!(evaluated, 100);
    // The 101st, from a fresh address, waits out the window.
    assert_eq!(login(&c, &from(4, 21), &email, PW).await, 429);
    c.clock.advance(Duration::from_secs(15 * 60 + 1));
    assert_eq!(login(&c, &from(4, 22), &email, PW).await, 200, "the ceiling's window ends");
    c.stop().await;
}
