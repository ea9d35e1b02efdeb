//! The database gauges against a scratch database (SQLite, or PostgreSQL when
//! `SOUQ_TEST_PG_URL` is set).
#![allow(clippy::unwrap_used)]

use chrono::Utc;
use sea_orm::{ActiveValue::Set, EntityTrait, IntoActiveModel};
use uuid::Uuid;

use super::*;
use crate::{db::scratch::ScratchDb, mail::Rendered, outbox};

fn instance(state: &str, node: Uuid) -> instances::Model {
    let now = Utc::now();
    instances::Model {
        id: Uuid::new_v4().simple().to_string()[..16].to_owned(),
        api_id: Uuid::new_v4(),
        version: 1,
        node_id: node,
        state: state.into(),
        error: None,
        restarts: 0,
        created_at: now,
        updated_at: now,
    }
}

fn gauge(family: &prometheus_client::metrics::family::Family<StateLabels, prometheus_client::metrics::gauge::Gauge>, state: &'static str) -> i64 {
    family.get_or_create(&StateLabels { state }).get()
}

#[test]
fn a_node_is_down_first_then_draining_then_cordoned() {
    let now = Utc::now();
    let ttl = Duration::from_secs(8);
    let fresh = now - chrono::Duration::seconds(1);
    let stale = now - chrono::Duration::seconds(9);
    assert_eq!(node_state(fresh, true, false, now, ttl), "ready");
    assert_eq!(node_state(fresh, false, false, now, ttl), "cordoned");
    assert_eq!(node_state(fresh, false, true, now, ttl), "draining");
    assert_eq!(node_state(stale, false, true, now, ttl), "down");
    assert_eq!(node_state(stale, true, false, now, ttl), "down");
}

#[tokio::test]
async fn gauges_follow_the_database() {
    let t = ScratchDb::new().await;
    let m = Metrics::default();
    let now = Utc::now();
    let ttl = Duration::from_secs(8);

    // An empty database: every state reads 0, nothing waits in the outbox.
    refresh(&t.db, &m, now, ttl).await.unwrap();
    for state in NODE_STATES {
        assert_eq!(gauge(&m.nodes, state), 0, "{state}");
    }
    assert_eq!((gauge(&m.instances, "running"), m.mail_outbox_depth.get(), m.mail_outbox_oldest_age.get()), (0, 0, 0.0));

    let fresh = now - chrono::Duration::seconds(1);
    let mut cordoned = nodes::Model::sample("b", "http://b:7100", fresh);
    cordoned.schedulable = false;
    let mut draining = nodes::Model::sample("c", "http://c:7100", fresh);
    (draining.schedulable, draining.draining) = (false, true);
    let ready = nodes::Model::sample("a", "http://a:7100", fresh);
    let down = nodes::Model::sample("d", "http://d:7100", now - chrono::Duration::seconds(30));
    let ready_id = ready.id;
    for n in [ready, cordoned, draining, down] {
        nodes::Entity::insert(n.into_active_model()).exec_without_returning(&t.db).await.unwrap();
    }
    for state in [instances::RUNNING, instances::RUNNING, instances::STARTING, instances::STOPPING] {
        instances::Entity::insert(instance(state, ready_id).into_active_model()).exec_without_returning(&t.db).await.unwrap();
    }
    let mail = || Rendered { subject: "s".into(), text: "t".into(), html: "h".into() };
    outbox::enqueue(&t.db, now - chrono::Duration::seconds(90), "old@example.com", "verify", mail()).await.unwrap();
    outbox::enqueue(&t.db, now - chrono::Duration::seconds(10), "new@example.com", "verify", mail()).await.unwrap();
    outbox::enqueue(&t.db, now - chrono::Duration::seconds(500), "sent@example.com", "verify", mail()).await.unwrap();
    // The oldest was sent: it no longer waits.
    let sent = mail_outbox::ActiveModel { sent_at: Set(Some(now)), ..Default::default() };
    mail_outbox::Entity::update_many()
        .set(sent)
        .filter(mail_outbox::Column::Recipient.eq("sent@example.com"))
        .exec(&t.db)
        .await
        .unwrap();

    refresh(&t.db, &m, now, ttl).await.unwrap();
    let nodes: Vec<i64> = NODE_STATES.iter().map(|s| gauge(&m.nodes, s)).collect();
    assert_eq!(nodes, [1, 1, 1, 1], "ready, cordoned, draining, down");
    let instances: Vec<i64> = ["starting", "running", "crashed", "failed", "stopping", "other"].iter().map(|s| gauge(&m.instances, s)).collect();
    assert_eq!(instances, [1, 2, 0, 0, 1, 0]);
    assert_eq!(m.mail_outbox_depth.get(), 2);
    let age = m.mail_outbox_oldest_age.get();
    assert!((89.0..=91.0).contains(&age), "{age}");

    // Rows go away: the gauges fall back to 0 rather than keep stale values.
    instances::Entity::delete_many().exec(&t.db).await.unwrap();
    mail_outbox::Entity::delete_many().exec(&t.db).await.unwrap();
    refresh(&t.db, &m, now, ttl).await.unwrap();
    assert_eq!((gauge(&m.instances, "running"), m.mail_outbox_depth.get(), m.mail_outbox_oldest_age.get()), (0, 0, 0.0));
    t.close().await;
}
