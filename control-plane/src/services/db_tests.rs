//! The marketplace against a real database (SQLite, or PostgreSQL with `SOUQ_TEST_PG_URL`):
//! plans, subscriptions, keys, the access table and exactly-once usage, with APIs made,
//! published and deleted through the service layer's flows, as the edge makes them.
#![allow(clippy::unwrap_used)]

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use souq_proto::{
    Kind,
    apis::{Api, CreateApiRequest, UpdateApiRequest},
    market::{CreatePlanRequest, MarketplaceRequest, SubscribeRequest},
    metering::{AccessTable, UsageAck, UsageBatch, UsageEvent},
};
use uuid::Uuid;

use super::apis;
use crate::{
    clock::Clock,
    entity::users,
    error::{Error, Result},
    market::{access, catalog, keys, plans, report, statement, subscriptions, usage},
    state::State,
    testing::TestDb,
};

fn kind<T: std::fmt::Debug>(r: Result<T>) -> (Kind, Option<String>) {
    match r {
        Err(Error::Wire(w)) => (w.kind, w.field),
        other => panic!("expected a wire error, got {other:?}"),
    }
}

async fn new_api(state: &State, owner: Uuid, name: &str, public: bool) -> Result<Api> {
    let req = CreateApiRequest {
        name: name.into(),
        runtime: "python".into(),
        code: "def handler(event):\n    return 1\n".into(),
        description: None,
        public: Some(public),
    };
    Ok(apis::create_api(state, owner, req).await?.api.unwrap())
}

fn table(state: &State) -> AccessTable {
    AccessTable::clone(&state.market.access.subscribe().borrow())
}

#[tokio::test]
async fn plans_subscriptions_and_keys_shape_the_access_table() {
    let t = TestDb::new().await;
    let s = &*t.state;
    let seller = t.user(false).await;
    let buyer = t.user(true).await;

    // Creating keys needs a verified address.
    assert_eq!(kind(keys::create(&s.market, seller, "laptop").await).0, Kind::Forbidden);
    // Publishing needs a verified address, at creation and on update.
    assert_eq!(kind(new_api(s, seller, "Gold Prices", true).await).0, Kind::Forbidden);
    let api = new_api(s, seller, "Gold Prices", false).await.unwrap();
    let publish = || UpdateApiRequest { api_id: api.id.clone(), name: None, description: None, public: Some(true) };
    assert_eq!(kind(apis::update_api(s, seller, publish()).await).0, Kind::Forbidden);
    assert_eq!(kind(apis::update_api(s, buyer, publish()).await).0, Kind::NotFound);

    // Every API starts with the free plan; only its owner adds plans; names are unique.
    let listed = plans::list(&s.market, Some(seller), &api.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    let free = &listed[0];
    assert_eq!((free.name.as_str(), free.price_minor, free.currency.as_str(), free.monthly_quota, free.rate_limit_per_minute), ("free", 0, "USD", 1000, 60));
    assert_eq!(kind(plans::list(&s.market, None, &api.id).await).0, Kind::NotFound, "a private API's plans are hidden");
    let pro = |name: &str, currency: &str| CreatePlanRequest {
        api_id: api.id.clone(),
        name: name.into(),
        price_minor: 1999,
        currency: currency.into(),
        monthly_quota: 50_000,
        rate_limit_per_minute: 600,
    };
    assert_eq!(kind(plans::create(&s.market, buyer, pro("pro", "SAR")).await).0, Kind::NotFound);
    assert_eq!(kind(plans::create(&s.market, seller, pro("pro", "EUR")).await), (Kind::Validation, Some("currency".into())));
    let pro_plan = plans::create(&s.market, seller, pro("pro", "SAR")).await.unwrap();
    assert_eq!(kind(plans::create(&s.market, seller, pro("pro", "USD")).await).0, Kind::Conflict);
    assert_eq!(kind(plans::create(&s.market, seller, pro("free", "USD")).await).0, Kind::Conflict);

    // A private API cannot be subscribed to, nor found in the marketplace.
    let sub_req = |plan: &str| SubscribeRequest { slug: api.slug.clone(), plan: plan.into() };
    assert_eq!(kind(subscriptions::subscribe(&s.market, buyer, sub_req("")).await).0, Kind::NotFound);
    let market = |query: &str| MarketplaceRequest { query: query.into(), page: 0, per_page: 0 };
    assert_eq!(catalog::page(&s.market, market("")).await.unwrap().total, 0);

    users::Entity::update_many()
        .col_expr(users::Column::EmailVerified, Expr::value(true))
        .filter(users::Column::Id.eq(seller))
        .exec(&s.db)
        .await
        .unwrap();
    assert!(apis::update_api(s, seller, publish()).await.unwrap().public);
    new_api(s, seller, "Weather 100%", true).await.unwrap();

    // The marketplace: public APIs, newest first, searched without regard to case, with
    // LIKE wildcards taken literally.
    let page = catalog::page(&s.market, market("")).await.unwrap();
    assert_eq!((page.total, page.page, page.per_page), (2, 1, 20));
    assert_eq!(page.entries[0].api.as_ref().unwrap().name, "Weather 100%");
    let gold = catalog::page(&s.market, market("GOLD")).await.unwrap();
    assert_eq!(gold.total, 1);
    assert_eq!(gold.entries[0].plans.len(), 2);
    assert_eq!(catalog::page(&s.market, market("100%")).await.unwrap().total, 1);
    assert_eq!(catalog::page(&s.market, market("%")).await.unwrap().total, 1);
    assert_eq!(catalog::page(&s.market, market("g_ld")).await.unwrap().total, 0);
    let second = catalog::page(&s.market, MarketplaceRequest { query: String::new(), page: 2, per_page: 1 }).await.unwrap();
    assert_eq!((second.total, second.entries.len()), (2, 1));
    assert_eq!(second.entries[0].api.as_ref().unwrap().slug, api.slug);
    assert_eq!(plans::list(&s.market, None, &api.id).await.unwrap().len(), 2, "anyone reads a public API's plans");

    // Subscribing: the free plan by default, the same plan twice is a conflict, another
    // plan switches.
    let sub = subscriptions::subscribe(&s.market, buyer, sub_req("")).await.unwrap();
    assert_eq!(sub.plan.as_ref().unwrap().name, "free");
    assert_eq!(kind(subscriptions::subscribe(&s.market, buyer, sub_req("free")).await).0, Kind::Conflict);
    assert_eq!(kind(subscriptions::subscribe(&s.market, buyer, sub_req("gold")).await).0, Kind::NotFound);
    let switched = subscriptions::subscribe(&s.market, buyer, sub_req(&pro_plan.id)).await.unwrap();
    assert_eq!((switched.id.as_str(), switched.plan.as_ref().unwrap().name.as_str()), (sub.id.as_str(), "pro"));
    subscriptions::subscribe(&s.market, seller, sub_req("")).await.unwrap();

    // Keys: shown once, found by hash in the access table, gone from it once revoked.
    let created = keys::create(&s.market, buyer, "laptop").await.unwrap();
    let key = created.key.unwrap();
    assert!(created.secret.starts_with(&format!("{}_", key.prefix)));
    let hash = hex::decode(keys::hash(&created.secret)).unwrap();
    let t1 = table(s);
    assert!(t1.keys.iter().any(|k| k.sha256 == hash && k.key_id == key.id && k.user_id == buyer.to_string()));
    assert_eq!(t1.grants.len(), 2);
    let g = t1.grants.iter().find(|g| g.subscription_id == sub.id).unwrap();
    assert_eq!((g.plan_id.as_str(), g.monthly_quota, g.rate_limit_per_minute, g.used_this_month), (pro_plan.id.as_str(), 50_000, 600, 0));
    assert_eq!(kind(keys::revoke(&s.market, seller, &key.id).await).0, Kind::NotFound);
    assert_eq!(kind(keys::revoke(&s.market, buyer, "nope").await).0, Kind::NotFound);
    keys::revoke(&s.market, buyer, &key.id).await.unwrap();
    let t2 = table(s);
    assert!(t2.generation > t1.generation);
    assert!(t2.keys.iter().all(|k| k.key_id != key.id), "a revoked key leaves the table at once");
    keys::revoke(&s.market, buyer, &key.id).await.unwrap();
    let listed = keys::list(&s.market, buyer).await.unwrap();
    assert!(listed[0].revoked_at.is_some());
    assert_eq!(kind(keys::create(&s.market, buyer, "").await), (Kind::Validation, Some("name".into())));

    // The statement prices each subscription at its plan, one total per currency.
    let st = statement::statement(&s.market, buyer, "").await.unwrap();
    assert_eq!(st.lines.len(), 1);
    assert_eq!((st.totals[0].currency.as_str(), st.totals[0].amount_minor), ("SAR", 1999));
    assert_eq!(kind(statement::statement(&s.market, buyer, "2024-13").await), (Kind::Validation, Some("month".into())));
    assert_eq!(statement::statement(&s.market, buyer, "2020-01").await.unwrap().lines.len(), 0, "no subscription then");

    // Deleting the API takes its plans and subscriptions, and their grants, with it.
    apis::delete_api(s, seller, &api.id).await.unwrap();
    assert!(table(s).grants.is_empty());
    assert!(usage::mine(&s.market, buyer).await.unwrap().subscriptions.is_empty());
    t.close().await;
}

#[tokio::test]
async fn usage_is_committed_exactly_once() {
    let t = TestDb::new().await;
    let s = &*t.state;
    let seller = t.user(true).await;
    let buyer = t.user(true).await;
    let api = new_api(s, seller, "Echo", true).await.unwrap();
    let sub = subscriptions::subscribe(&s.market, buyer, SubscribeRequest { slug: api.slug.clone(), plan: String::new() }).await.unwrap();
    let key = keys::create(&s.market, buyer, "ci").await.unwrap().key.unwrap();
    let ts_ms = t.clock.now().timestamp_millis();
    let event = |position: &str, status: u32| UsageEvent {
        position: position.into(),
        api_id: api.id.clone(),
        user_id: buyer.to_string(),
        key_id: key.id.clone(),
        subscription_id: sub.id.clone(),
        status,
        latency_us: 2_000,
        bytes_in: 5,
        bytes_out: 50,
        cpu_us: 0,
        ts_ms,
        kind: "call".into(),
    };
    let batch = |source: &str, positions: &[(&str, u32)]| UsageBatch {
        source: source.into(),
        batch_id: format!("{source}/{}", positions.last().map_or("", |p| p.0)),
        events: positions.iter().map(|(p, st)| event(p, *st)).collect(),
    };
    let ack = |r: Result<UsageAck>| {
        let a = r.unwrap();
        (a.committed_through, a.committed)
    };

    let first = batch("edge-a", &[("1-0", 200), ("1-1", 200), ("2-0", 200)]);
    assert_eq!(ack(report::report(&s.market, first.clone()).await), ("2-0".into(), 3));
    assert_eq!(ack(report::report(&s.market, first).await), ("2-0".into(), 0), "a resent batch commits nothing");
    // A batch that overlaps what is committed commits only what is new.
    assert_eq!(ack(report::report(&s.market, batch("edge-a", &[("2-0", 200), ("10-0", 503)])).await), ("10-0".into(), 1));
    assert_eq!(ack(report::report(&s.market, batch("edge-a", &[])).await), ("10-0".into(), 0), "an empty batch asks");
    assert_eq!(ack(report::report(&s.market, batch("edge-b", &[("1-0", 200)])).await), ("1-0".into(), 1), "sources are apart");
    assert_eq!(ack(report::report(&s.market, batch("edge-c", &[])).await), (String::new(), 0));
    let mut bad = batch("edge-a", &[("11-0", 200)]);
    bad.batch_id = "edge-a/10-0".into();
    assert_eq!(kind(report::report(&s.market, bad).await), (Kind::Validation, Some("batch_id".into())));

    // Five calls were committed, one of them an error, all in this hour.
    let by_api = usage::of_api(&s.market, seller, &api.id, 0).await.unwrap();
    assert_eq!((by_api.calls, by_api.errors, by_api.windows.len()), (5, 1, 1));
    let w = &by_api.windows[0];
    assert_eq!((w.bytes_in, w.bytes_out, w.p50_ms, w.p95_ms), (25, 250, 2.5, 2.5));
    assert_eq!(kind(usage::of_api(&s.market, buyer, &api.id, 0).await).0, Kind::NotFound);
    assert_eq!(kind(usage::of_api(&s.market, seller, &api.id, 745).await).1, Some("hours".into()));

    let mine = usage::mine(&s.market, buyer).await.unwrap();
    assert_eq!(mine.keys.len(), 1);
    assert_eq!(mine.keys[0].calls, 5);
    let su = &mine.subscriptions[0];
    assert_eq!((su.calls, su.quota_left, su.cost_minor, su.currency.as_str()), (5, 995, 0, "USD"));
    let st = statement::statement(&s.market, buyer, &mine.month).await.unwrap();
    assert_eq!((st.lines[0].calls, st.lines[0].cost_minor), (5, 0));

    access::refresh(&s.market).await.unwrap();
    let grant = table(s).grants.into_iter().find(|g| g.subscription_id == sub.id).unwrap();
    assert_eq!((grant.used_this_month, grant.month), (5, mine.month.clone()));

    // A new month starts from zero; the old one's statement keeps its calls.
    t.clock.advance(std::time::Duration::from_secs(32 * 24 * 3600));
    let next = usage::mine(&s.market, buyer).await.unwrap();
    assert_ne!(next.month, mine.month);
    assert_eq!((next.subscriptions[0].calls, next.subscriptions[0].quota_left), (0, 1000));
    assert_eq!(statement::statement(&s.market, buyer, &mine.month).await.unwrap().lines[0].calls, 5);
    access::refresh(&s.market).await.unwrap();
    let grant = table(s).grants.into_iter().find(|g| g.subscription_id == sub.id).unwrap();
    assert_eq!((grant.used_this_month, grant.month), (0, next.month));
    t.close().await;
}

#[tokio::test]
async fn concurrent_reports_of_many_sources_count_every_call_once() {
    let t = TestDb::new().await;
    let seller = t.user(true).await;
    let api = new_api(&t.state, seller, "Busy", true).await.unwrap();
    let ts_ms = t.clock.now().timestamp_millis();
    // Five callers, so each batch locks several shared windows.
    let callers: Vec<String> = (0..5).map(|_| Uuid::now_v7().to_string()).collect();
    let batch = |source: usize, n: usize| {
        let name = format!("edge-{source}");
        let events: Vec<UsageEvent> = (0..50)
            .map(|i| UsageEvent {
                position: format!("{n}-{i}"),
                api_id: api.id.clone(),
                user_id: callers[(i + source) % callers.len()].clone(),
                status: 200,
                latency_us: 300,
                ts_ms,
                kind: "call".into(),
                ..UsageEvent::default()
            })
            .collect();
        UsageBatch { batch_id: format!("{name}/{n}-49"), source: name, events }
    };
    // Every batch twice, all at once: the windows are shared by every source.
    let mut tasks = Vec::new();
    for _round in 0..2 {
        for source in 0..8 {
            let state = t.state.clone();
            let batches: Vec<UsageBatch> = (1..=3).map(|n| batch(source, n)).collect();
            tasks.push(tokio::spawn(async move {
                for b in batches {
                    // A failed transaction commits nothing: send again, as an edge does.
                    let mut tries = 0;
                    while let Err(e) = report::report(&state.market, b.clone()).await {
                        tries += 1;
                        assert!(tries < 20, "report keeps failing: {e}");
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let by_api = usage::of_api(&t.state.market, seller, &api.id, 1).await.unwrap();
    assert_eq!(by_api.calls, 8 * 3 * 50);
    t.close().await;
}

#[tokio::test]
async fn apis_made_before_plans_existed_get_their_free_plan() {
    let t = TestDb::migrated_to(Some(5)).await;
    let seller = t.user(true).await;
    let api = crate::entity::apis::Model {
        id: Uuid::now_v7(),
        owner_id: seller,
        name: "Old".into(),
        slug: "old".into(),
        runtime: "python".into(),
        description: String::new(),
        public: true,
        latest_version: 1,
        created_at: chrono::Utc::now(),
    };
    crate::entity::apis::Entity::insert(sea_orm::IntoActiveModel::into_active_model(api.clone()))
        .exec_without_returning(&t.state.db)
        .await
        .unwrap();
    crate::migrate(&t.state.db).await.unwrap();
    let listed = plans::list(&t.state.market, None, &api.id.to_string()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].price_minor, listed[0].monthly_quota), ("free", 0, 1000));
    let sub = subscriptions::subscribe(&t.state.market, seller, SubscribeRequest { slug: "old".into(), plan: String::new() }).await.unwrap();
    assert_eq!(sub.plan.unwrap().id, listed[0].id);
    t.close().await;
}

#[tokio::test]
async fn an_api_comes_with_a_free_plan_and_goes_with_what_every_area_keeps_of_it() {
    use sea_orm::PaginatorTrait;

    use crate::{
        deploy::desired,
        entity::{api_versions, deployments, plans as plan_rows},
    };

    let t = TestDb::new().await;
    let s = &*t.state;
    let owner = t.user(true).await;
    let a = new_api(s, owner, "Twin", true).await.unwrap();
    let b = new_api(s, owner, "Twin", true).await.unwrap();
    assert_eq!(a.slug, "twin");
    assert!(b.slug.starts_with("twin-") && b.slug.len() == "twin-".len() + 6, "a taken slug gets a suffix: {}", b.slug);
    for api in [&a, &b] {
        assert_eq!(plans::list(&s.market, None, &api.id).await.unwrap().len(), 1, "created with its free plan");
    }
    let deploy = souq_proto::apis::DeployApiRequest { api_id: a.id.clone(), version: None, replicas: Some(1), region: None };
    desired::deploy(&s.deployer, owner, deploy, &s.quotas).await.unwrap();

    apis::delete_api(s, owner, &a.id).await.unwrap();
    let id: Uuid = a.id.parse().unwrap();
    assert!(deployments::Entity::find_by_id(id).one(&s.db).await.unwrap().is_none());
    assert_eq!(plan_rows::Entity::find().filter(plan_rows::Column::ApiId.eq(id)).count(&s.db).await.unwrap(), 0);
    assert_eq!(api_versions::Entity::find().filter(api_versions::Column::ApiId.eq(id)).count(&s.db).await.unwrap(), 0);
    assert_eq!(kind(apis::delete_api(s, owner, &a.id).await).0, Kind::NotFound);
    assert_eq!(plans::list(&s.market, None, &b.id).await.unwrap().len(), 1, "the other API keeps its plan");
    t.close().await;
}
