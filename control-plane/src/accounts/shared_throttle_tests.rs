//! Logins on two control-plane replicas over one database share one count, and a
//! replica whose database fails refuses the check rather than letting a guess through.
#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;
use souq_proto::{Kind, accounts::LoginRequest};
use tokio::sync::Notify;

use super::{Accounts, session};
use crate::{
    Error, ManualClock,
    auth::{lockout::PAIR_LIMIT, test_db::Replicas, token::TokenSigner},
};

/// The accounts area over `db`, as one replica holds it.
fn accounts(db: &DatabaseConnection, dir: &std::path::Path, clock: Arc<ManualClock>) -> Accounts {
    let tokens = TokenSigner::load_or_create(&dir.join("jwt.pem"), Duration::from_secs(900)).unwrap();
    Accounts::new(db.clone(), clock, "http://localhost", tokens, Arc::new(Notify::new()))
}

async fn login(accounts: &Accounts, email: &str) -> Result<(), Error> {
    let req = LoginRequest { email: email.into(), password: "a wrong guess".into(), client_ip: "10.0.0.66".into() };
    session::login(accounts, req).await.map(|_| ())
}

fn kind(r: Result<(), Error>) -> Kind {
    match r {
        Err(Error::Wire(w)) => w.kind,
        other => panic!("not a wire error: {other:?}"),
    }
}

#[tokio::test]
async fn logins_on_two_replicas_share_one_count_and_fail_closed() {
    let r = Replicas::new().await;
    let clock = Arc::new(ManualClock::new());
    let (one, two) = (accounts(&r.a, &r.dir, clock.clone()), accounts(&r.b, &r.dir, clock.clone()));
    let email = "nobody@example.com";
    for i in 0..PAIR_LIMIT {
        let replica = if i % 2 == 0 { &one } else { &two };
        assert_eq!(kind(login(replica, email).await), Kind::Unauthenticated, "guess {i} is evaluated");
    }
    assert_eq!(kind(login(&one, email).await), Kind::RateLimited);
    assert_eq!(kind(login(&two, email).await), Kind::RateLimited);
    // A replica whose database fails lets no guess through: the check is refused.
    let broken = accounts(
        &crate::connect(&format!("sqlite://{}?mode=rwc", r.dir.join("empty.db").display())).await.unwrap(),
        &r.dir,
        clock,
    );
    let refused = login(&broken, "other@example.com").await;
    assert!(matches!(refused, Err(Error::Db(_))), "{refused:?}");
    r.close().await;
}
