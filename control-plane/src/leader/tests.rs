//! The lease on a real database (SQLite, or PostgreSQL with `SOUQ_TEST_PG_URL`): taking,
//! renewing, losing and fencing.
#![allow(clippy::unwrap_used)]
use std::{sync::Arc, time::Duration};

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::{db::scratch::ScratchDb, entity::node_reports};

/// Ends the lease now, as if its holder had died long ago.
async fn expire(db: &DatabaseConnection) {
    leases::Entity::update_many()
        .col_expr(leases::Column::ExpiresAt, DateTime::<Utc>::UNIX_EPOCH.into())
        .filter(leases::Column::Name.eq(LEASE))
        .exec(db)
        .await
        .unwrap();
}

async fn lease(db: &DatabaseConnection) -> leases::Model {
    leases::Entity::find_by_id(LEASE.to_owned()).one(db).await.unwrap().unwrap()
}

/// Polls `f` every 20 ms for at most 20 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn acquire_renew_expiry_and_takeover_bump_the_epoch() {
    let t = ScratchDb::new().await;
    let db = &t.db;
    assert_eq!(lease(db).await.epoch, 0, "the migration leaves the lease free at epoch 0");
    let a = Leadership::new(db.clone(), "host-a/00000001".into());
    let b = Leadership::new(db.clone(), "host-b/00000002".into());

    assert_eq!(a.step(None).await.unwrap(), Some(1), "a free lease is taken at epoch 1");
    let row = lease(db).await;
    assert_eq!((row.holder.as_str(), row.epoch), ("host-a/00000001", 1));
    assert!(row.expires_at > Utc::now());
    assert_eq!(b.step(None).await.unwrap(), None, "a held lease is not taken");
    assert_eq!(b.current_epoch(), 1, "a follower learns the epoch");
    assert_eq!(a.step(Some(1)).await.unwrap(), Some(1), "renewed");
    assert!(lease(db).await.expires_at >= row.expires_at);

    expire(db).await;
    assert_eq!(b.step(None).await.unwrap(), Some(2), "an expired lease is taken, one epoch up");
    assert_eq!(lease(db).await.holder, "host-b/00000002");
    assert_eq!(a.step(Some(1)).await.unwrap(), None, "the old holder's renewal matches nothing: lost");
    assert_eq!(a.current_epoch(), 2);
    assert_eq!(a.step(None).await.unwrap(), None, "and it does not take a held lease back");
    t.close().await;
}

#[tokio::test]
async fn of_two_contenders_exactly_one_leads() {
    let t = ScratchDb::new().await;
    let timings =
        Timings { ttl: Duration::from_secs(3), renew_every: Duration::from_millis(100), margin: Duration::from_secs(1) };
    let a = Arc::new(Leadership::new(t.db.clone(), "host/aaaaaaaa".into()).with_timings(timings));
    let b = Arc::new(Leadership::new(t.db.clone(), "host/bbbbbbbb".into()).with_timings(timings));
    // Both at once on the free lease: the compare-and-set lets one through.
    let (ra, rb) = tokio::join!(a.step(None), b.step(None));
    let won: Vec<u64> = [ra.unwrap(), rb.unwrap()].into_iter().flatten().collect();
    assert_eq!(won, vec![1], "exactly one takes the lease");
    expire(&t.db).await;

    let stop = CancellationToken::new();
    let tasks = [tokio::spawn(a.clone().run(stop.clone())), tokio::spawn(b.clone().run(stop.clone()))];
    until("a leader", || a.epoch().is_some() || b.epoch().is_some()).await;
    // Over many renewals, never both.
    for _ in 0..20 {
        assert!(a.epoch().is_none() || b.epoch().is_none(), "two leaders at once");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (leader, follower) = if a.epoch().is_some() { (&a, &b) } else { (&b, &a) };
    assert_eq!(leader.epoch(), Some(2));
    assert_eq!(lease(&t.db).await.holder, leader.holder());
    assert_eq!(follower.current_epoch(), 2);

    // A leader that stops releases the lease: the other takes it at once, one epoch up.
    let mut watch = follower.leading();
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(leader.epoch(), None);
    assert!(lease(&t.db).await.expires_at < Utc::now(), "released");
    let stop = CancellationToken::new();
    let task = tokio::spawn(follower.clone().run(stop.clone()));
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|e| *e == Some(3))).await.unwrap().unwrap();
    stop.cancel();
    task.await.unwrap();
    t.close().await;
}

#[tokio::test]
async fn an_old_leaders_write_after_a_new_epoch_is_refused_at_the_database() {
    let t = ScratchDb::new().await;
    let db = &t.db;
    let old = Leadership::new(db.clone(), "host/0000000a".into());
    let new = Leadership::new(db.clone(), "host/0000000b".into());
    assert_eq!(old.step(None).await.unwrap(), Some(1));
    let node = Uuid::new_v4();
    let report = |ids: &str| node_reports::ActiveModel {
        node_id: Set(node),
        instances: Set(ids.to_owned()),
        reported_at: Set(Utc::now()),
    };

    // Under its epoch the leader writes, even past its lease's expiry, until another
    // replica takes the lease.
    expire(db).await;
    let txn = fenced(db, 1).await.unwrap();
    node_reports::Entity::insert(report(r#"["x"]"#)).exec_without_returning(&txn).await.unwrap();
    // A takeover that starts meanwhile waits for the fenced transaction (its row lock on
    // PostgreSQL, the one writer on SQLite), which commits before the new epoch exists.
    let takeover = tokio::spawn(async move { new.step(None).await.unwrap() });
    txn.commit().await.unwrap();
    assert_eq!(takeover.await.unwrap(), Some(2));

    // After it, the old leader's write is refused, and the row stays as it was.
    let refused = fenced(db, 1).await;
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("epoch 1")), "{:?}", refused.err());
    let row = node_reports::Entity::find_by_id(node).one(db).await.unwrap().unwrap();
    assert_eq!(row.instances, r#"["x"]"#);
    // The new leader writes under its epoch.
    let txn = fenced(db, 2).await.unwrap();
    node_reports::Entity::update(report(r#"["y"]"#)).exec(&txn).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(node_reports::Entity::find_by_id(node).one(db).await.unwrap().unwrap().instances, r#"["y"]"#);
    assert_eq!(old.step(Some(1)).await.unwrap(), None);
    t.close().await;
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
    let t = ScratchDb::new().await;
    let db = &t.db;
    let timings =
        Timings { ttl: Duration::from_secs(3), renew_every: Duration::from_millis(100), margin: Duration::from_secs(1) };
    let leader = Arc::new(Leadership::new(db.clone(), "host/0000000c".into()).with_timings(timings));
    let stop = CancellationToken::new();
    let task = tokio::spawn(leader.clone().run(stop.clone()));
    let mut watch = leader.leading();
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(|e| *e == Some(1))).await.unwrap().unwrap();
    assert!(leader.leads(1) && !leader.leads(2));

    // Hold the lease row (PostgreSQL) or the one connection (SQLite): renewals hang.
    let blocker = db.begin().await.unwrap();
    leases::Entity::update_many()
        .col_expr(leases::Column::Epoch, Expr::col(leases::Column::Epoch))
        .filter(leases::Column::Name.eq(LEASE))
        .exec(&blocker)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), watch.wait_for(Option::is_none)).await.unwrap().unwrap();
    let stepped_down_at = Utc::now();
    assert!(!leader.leads(1), "no command goes out once stepped down");
    let row = leases::Entity::find_by_id(LEASE.to_owned()).one(&blocker).await.unwrap().unwrap();
    assert_eq!(row.holder, "host/0000000c", "nobody took it: the leader stepped down on its own");
    assert!(stepped_down_at < row.expires_at, "stepped down at {stepped_down_at}, lease valid until {}", row.expires_at);
    blocker.rollback().await.unwrap();
    stop.cancel();
    task.await.unwrap();
    t.close().await;
}
