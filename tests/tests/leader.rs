//! Several control planes on one database (issue 14): only the leader places instances;
//! when it stops, another takes the lease and places. SQLite allows one control plane.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::json;
use souq_control_plane::{
    entity::{instances, leases},
    leader::LEASE,
};
use souq_proto::{
    agent::{DeployRequest, StopRequest, agent_client::AgentClient},
    fence,
    tls::Role,
};
use souq_tests::{PG_ENV, TestCluster, apis::Api};
use tokio_util::sync::CancellationToken;

const HELLO: &str = "def handler(event):\n    return {\"hello\": \"leader\"}\n";

async fn lease(db: &DatabaseConnection) -> leases::Model {
    leases::Entity::find_by_id(LEASE.to_owned()).one(db).await.unwrap().unwrap()
}

async fn instances_of(db: &DatabaseConnection, api: &Api) -> Vec<instances::Model> {
    let id: uuid::Uuid = api.id.parse().unwrap();
    instances::Entity::find().filter(instances::Column::ApiId.eq(id)).all(db).await.unwrap()
}

#[tokio::test]
async fn only_the_leader_places_and_another_takes_over_when_it_stops() {
    if std::env::var(PG_ENV).is_err() {
        eprintln!("note: {PG_ENV} is unset; two control planes need PostgreSQL, so this test is skipped");
        return;
    }
    // The extra control plane starts first and leads; the agent and the edge talk to the
    // other, a follower.
    let mut c = TestCluster::builder().control_planes(2).start().await;
    let db = souq_control_plane::connect(&c.database_url).await.unwrap();
    assert_eq!(lease(&db).await.epoch, 1, "one takeover so far");

    let token = c.user().await;
    let first = c.create_api(&token, "led", "python", HELLO).await;
    c.deploy(&token, &first, json!({"replicas": 1})).await;
    // A few passes of the leader later there is still one instance: the follower, which
    // the agent heartbeats to, neither places nor takes the instance for a stray.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(instances_of(&db, &first).await.len(), 1);
    assert_eq!(c.containers().len(), 1, "one instance container");
    // The follower serves the edge a route table it rebuilt from the database.
    assert_eq!(c.call_ok(&token, &first, "/").await["hello"], "leader");

    // A stray, an instance the agent holds but no row wants: the agent reports it to the
    // follower, which records the report; the leader finds it there and stops it.
    let cp = c.issue(Role::ControlPlane, "control-plane");
    let mut agent = AgentClient::new(TestCluster::channel(&cp, &c.agent_urls[0], Role::Agent));
    let bearer = format!("Bearer {}", c.join_token());
    let mut deploy = tonic::Request::new(DeployRequest {
        instance_id: "5a7a75a7a75a7a75".into(),
        api_id: first.id.clone(),
        version: 1,
        runtime: "python".into(),
        code: HELLO.into(),
        timeout_ms: 5000,
    });
    deploy.metadata_mut().insert("authorization", bearer.parse().unwrap());
    fence::set_epoch(&mut deploy, 1);
    agent.deploy(deploy).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while c.containers().len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "the stray is still there: {:?}", c.containers());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(instances_of(&db, &first).await.len(), 1, "the wanted instance is kept");

    c.stop_extra_control_planes().await;
    // It released the lease on its way out: the other takes it, one epoch up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while lease(&db).await.epoch < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no takeover: {:?}", lease(&db).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = c.create_api(&token, "led-later", "python", HELLO).await;
    c.deploy(&token, &second, json!({"replicas": 1})).await;
    assert_eq!(c.call_ok(&token, &second, "/").await["hello"], "leader");
    assert_eq!(instances_of(&db, &first).await.len(), 1, "the first API's instance is kept");
    assert_eq!(instances_of(&db, &second).await.len(), 1);
    assert_eq!(lease(&db).await.epoch, 2);

    // The agent has seen epoch 2 (the new leader's Deploy): a Stop from the old leader,
    // stamped with epoch 1, is refused, and the instance keeps serving.
    let old = instances_of(&db, &first).await.remove(0);
    let mut stop = tonic::Request::new(StopRequest { instance_id: old.id });
    stop.metadata_mut().insert("authorization", bearer.parse().unwrap());
    fence::set_epoch(&mut stop, 1);
    let refused = agent.stop(stop).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(fence::is_stale(&refused), "{refused:?}");
    assert_eq!(c.call_ok(&token, &first, "/").await["hello"], "leader");
    db.close().await.unwrap();
    c.stop().await;
}

#[tokio::test]
async fn a_second_control_plane_on_the_same_sqlite_file_is_refused() {
    if std::env::var(PG_ENV).is_ok() {
        eprintln!("note: {PG_ENV} is set; this test is about SQLite, so it is skipped");
        return;
    }
    let c = TestCluster::builder().start().await;
    let cfg = souq_control_plane::Config::new(
        c.database_url.clone(),
        c.data_dir.join("second-jwt.pem"),
        "another-join-token".into(),
        c.url.clone(),
        c.data_dir.join("second-mail"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = souq_control_plane::run(cfg, listener, CancellationToken::new());
    let refused = tokio::time::timeout(Duration::from_secs(30), run).await.expect("refused at start").unwrap_err().to_string();
    assert!(refused.contains("another control plane uses this SQLite database"), "{refused}");
    assert!(refused.contains("souq.db"), "names the database: {refused}");
    assert!(refused.contains("use PostgreSQL for several"), "{refused}");
    c.stop().await;
}
