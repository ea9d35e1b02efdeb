//! A mail server that is down never fails a signup and never loses its token: the mail
//! is retried with back-off and arrives once the server is back.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use souq_tests::{TestCluster, mail};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to the real SMTP sink that hangs up on every client until opened.
async fn relay(open: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if !open.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                let mut sink = TcpStream::connect("127.0.0.1:2525").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut sink).await;
            });
        }
    });
    format!("smtp://{addr}")
}

#[tokio::test]
async fn a_failed_send_is_retried_and_the_token_survives() {
    let open = Arc::new(AtomicBool::new(false));
    let c = TestCluster::builder().agents(0).smtp_url(&relay(open.clone()).await).start().await;
    let email = TestCluster::email();
    let (s, _) = c.post("/api/v1/auth/signup", None, json!({"email": email, "password": "a fine passphrase"})).await;
    assert_eq!(s, 202, "a dead mail server does not fail the signup");

    let db = souq_control_plane::connect(&c.database_url).await.unwrap();
    let sql = format!("SELECT attempts, last_error FROM mail_outbox WHERE recipient = '{email}'");
    let mut failed = false;
    for _ in 0..200 {
        let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql.clone())).await.unwrap();
        if let Some(row) = rows.first() {
            let attempts: i32 = row.try_get("", "attempts").unwrap();
            let error: Option<String> = row.try_get("", "last_error").unwrap();
            if attempts >= 1 && error.is_some() {
                failed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "the first send should have failed and been recorded");
    assert!(mail::all_for(&email).is_empty());

    open.store(true, Ordering::SeqCst);
    c.clock.advance(Duration::from_secs(3));
    let mails = mail::wait_for(&email, 1, Duration::from_secs(15)).await;
    let link = mail::link_containing(&mails[0].text, "/verify-email/").unwrap();
    assert_eq!(c.http.get(&link).send().await.unwrap().status(), 200, "the token was not lost");
    c.stop().await;
}
