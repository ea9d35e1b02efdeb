//! Plan history against a real database (SQLite, or PostgreSQL with `SOUQ_TEST_PG_URL`):
//! downgrades wait for the next month, upgrades apply at once, and statements keep what
//! was in force, also after the API is deleted through the service layer's flow.
#![allow(clippy::unwrap_used)]

use sea_orm::{EntityTrait, IntoActiveModel};
use souq_proto::{
    Kind,
    market::{CreatePlanRequest, Statement, SubscribeRequest},
    metering::{AccessTable, UsageBatch, UsageEvent},
};
use uuid::Uuid;

use crate::{
    clock::Clock,
    entity::apis,
    error::Error,
    market::{Month, access, plans, report, statement, subscriptions, usage},
    testing::TestDb,
};

/// A public API of `owner` with its free plan and a `pro` plan at 49.99 SAR.
async fn api(t: &TestDb, owner: Uuid) -> apis::Model {
    let id = Uuid::now_v7();
    let api = apis::Model {
        id,
        owner_id: owner,
        name: "Gold".into(),
        slug: format!("gold-{}", &id.simple().to_string()[26..]),
        runtime: "python".into(),
        description: String::new(),
        public: true,
        latest_version: 1,
        created_at: t.clock.now(),
    };
    apis::Entity::insert(api.clone().into_active_model()).exec_without_returning(&t.state.db).await.unwrap();
    plans::insert(&t.state.db, plans::free(api.id, api.created_at)).await.unwrap();
    let pro = CreatePlanRequest {
        api_id: id.to_string(),
        name: "pro".into(),
        price_minor: 4999,
        currency: "SAR".into(),
        monthly_quota: 100_000,
        rate_limit_per_minute: 600,
    };
    plans::create(&t.state.market, owner, pro).await.unwrap();
    api
}

/// (plan, calls, cost, currency) of each line.
fn lines(st: &Statement) -> Vec<(&str, u64, u64, &str)> {
    st.lines.iter().map(|l| (l.plan.as_str(), l.calls, l.cost_minor, l.currency.as_str())).collect()
}

fn grant_plan(t: &TestDb) -> (String, u64) {
    let table = AccessTable::clone(&t.state.market.access.subscribe().borrow());
    table.grants.first().map(|g| (g.plan_id.clone(), g.monthly_quota)).unwrap()
}

#[tokio::test]
async fn downgrades_wait_upgrades_apply_and_statements_keep_what_was_in_force() {
    let t = TestDb::new().await;
    let m = &t.state.market;
    let (seller, buyer) = (t.user(true).await, t.user(false).await);
    let api = api(&t, seller).await;
    let to = |plan: &str| SubscribeRequest { slug: api.slug.clone(), plan: plan.into() };
    let sub = subscriptions::subscribe(m, buyer, to("pro")).await.unwrap();
    let pro_id = sub.plan.as_ref().unwrap().id.clone();
    // Three calls now.
    let events = (0..3)
        .map(|i| UsageEvent {
            position: format!("1-{i}"),
            api_id: api.id.to_string(),
            user_id: buyer.to_string(),
            subscription_id: sub.id.clone(),
            status: 200,
            ts_ms: t.clock.now().timestamp_millis(),
            kind: "call".into(),
            ..UsageEvent::default()
        })
        .collect();
    report::report(m, UsageBatch { source: "edge".into(), batch_id: "edge/1-2".into(), events }).await.unwrap();

    // Three hours before the month ends, free is asked for: it waits for the next month.
    let month = Month::of(t.clock.now());
    t.clock.advance((month.end() - t.clock.now() - chrono::Duration::hours(3)).to_std().unwrap());
    let down = subscriptions::subscribe(m, buyer, to("free")).await.unwrap();
    assert_eq!(down.plan.as_ref().unwrap().name, "pro");
    assert_eq!(down.pending_plan.as_ref().unwrap().name, "free");
    assert_eq!(down.plan_changes_at.as_deref(), Some(format!("{}-01T00:00:00Z", month.next()).as_str()));
    assert!(matches!(subscriptions::subscribe(m, buyer, to("free")).await, Err(Error::Wire(w)) if w.kind == Kind::Conflict));
    // Asking for pro again calls it off; asking for free again schedules it again.
    let kept = subscriptions::subscribe(m, buyer, to("pro")).await.unwrap();
    assert!(kept.pending_plan.is_none() && kept.plan_changes_at.is_none());
    subscriptions::subscribe(m, buyer, to("free")).await.unwrap();
    access::refresh(m).await.unwrap();
    assert_eq!(grant_plan(&t), (pro_id.clone(), 100_000), "pro's limits hold to the month's end");
    let this = statement::statement(m, buyer, &month.to_string()).await.unwrap();
    assert_eq!(lines(&this), [("pro", 3, 4999, "SAR")]);
    assert_eq!(usage::mine(m, buyer).await.unwrap().subscriptions[0].cost_minor, 4999);

    // The next month: free is in force (limits included), and the month before still bills pro.
    t.clock.advance(std::time::Duration::from_secs(4 * 3600));
    let next = Month::of(t.clock.now());
    assert_eq!(next, month.next());
    assert_eq!(lines(&statement::statement(m, buyer, &month.to_string()).await.unwrap()), [("pro", 3, 4999, "SAR")]);
    assert_eq!(lines(&statement::statement(m, buyer, "").await.unwrap()), [("free", 0, 0, "USD")]);
    access::refresh(m).await.unwrap();
    assert_ne!(grant_plan(&t).0, pro_id);
    assert_eq!(grant_plan(&t).1, 1000);
    let mine = usage::mine(m, buyer).await.unwrap();
    let held = mine.subscriptions[0].subscription.as_ref().unwrap();
    assert_eq!((held.plan.as_ref().unwrap().name.as_str(), held.pending_plan.is_none()), ("free", true));

    // An upgrade applies at once: the month splits, and costs the dearer plan.
    t.clock.advance(std::time::Duration::from_secs(24 * 3600));
    let up = subscriptions::subscribe(m, buyer, to("pro")).await.unwrap();
    assert_eq!((up.plan.as_ref().unwrap().name.as_str(), up.pending_plan.is_none()), ("pro", true));
    let split = statement::statement(m, buyer, "").await.unwrap();
    assert_eq!(lines(&split), [("free", 0, 0, "USD"), ("pro", 0, 4999, "SAR")]);
    assert_eq!(split.lines[0].ends_at, split.lines[1].starts_at);

    // The API goes: its lines stay, for the months before and up to the deletion.
    t.clock.advance(std::time::Duration::from_secs(3600));
    super::apis::delete_api(&t.state, seller, &api.id.to_string()).await.unwrap();
    assert!(usage::mine(m, buyer).await.unwrap().subscriptions.is_empty());
    assert_eq!(lines(&statement::statement(m, buyer, &month.to_string()).await.unwrap()), [("pro", 3, 4999, "SAR")]);
    let gone = statement::statement(m, buyer, "").await.unwrap();
    assert_eq!(lines(&gone), [("free", 0, 0, "USD"), ("pro", 0, 4999, "SAR")]);
    assert_eq!(gone.lines[1].ends_at, crate::clock::rfc3339(t.clock.now()));
    assert_eq!(gone.lines[1].slug, api.slug);
    t.clock.advance(std::time::Duration::from_secs(40 * 24 * 3600));
    assert!(statement::statement(m, buyer, "").await.unwrap().lines.is_empty(), "nothing after the deletion");
    t.close().await;
}

#[tokio::test]
async fn subscriptions_made_before_plan_history_keep_their_plan_on_statements() {
    use sea_orm::{
        ConnectionTrait,
        sea_query::{Alias, Query},
    };

    let t = TestDb::migrated_to(Some(6)).await;
    let m = &t.state.market;
    let (seller, buyer) = (t.user(true).await, t.user(false).await);
    let api = api(&t, seller).await;
    let pro = plans::of_api(&t.state.db, api.id).await.unwrap().into_iter().find(|p| p.name == "pro").unwrap();
    // A subscription as the schema before plan history held it.
    let columns = ["id", "user_id", "api_id", "plan_id", "created_at"].map(Alias::new);
    let row = Query::insert()
        .into_table(Alias::new("subscriptions"))
        .columns(columns)
        .values_panic([Uuid::now_v7().into(), buyer.into(), api.id.into(), pro.id.into(), t.clock.now().into()])
        .to_owned();
    t.state.db.execute(&row).await.unwrap();
    crate::migrate(&t.state.db).await.unwrap();

    let month = Month::of(t.clock.now()).to_string();
    assert_eq!(lines(&statement::statement(m, buyer, &month).await.unwrap()), [("pro", 0, 4999, "SAR")]);
    let down = subscriptions::subscribe(m, buyer, SubscribeRequest { slug: api.slug.clone(), plan: "free".into() }).await.unwrap();
    assert_eq!((down.plan.unwrap().name.as_str(), down.pending_plan.unwrap().name.as_str()), ("pro", "free"));
    assert_eq!(lines(&statement::statement(m, buyer, &month).await.unwrap()), [("pro", 0, 4999, "SAR")]);
    t.close().await;
}
