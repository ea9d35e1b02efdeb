//! Subscriptions: a consumer subscribes to a public API's plan, one subscription per API;
//! subscribing again switches its plan, at once or from the next month, and every switch
//! is kept in the plan history.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, TransactionTrait,
    sea_query::Expr,
};
use souq_proto::{
    Kind,
    market::{SubscribeRequest, Subscription},
};
use uuid::Uuid;

use super::{
    Market, access, history,
    plans::{self, FREE},
};
use crate::{
    clock::rfc3339,
    entity::{apis, plans as plan_rows, subscriptions},
    error::{Error, Result},
};

/// Most subscriptions one user may hold.
pub const MAX_SUBSCRIPTIONS_PER_USER: u64 = 100;

/// The wire form of a subscription to the API `slug`, on `plan` now and, when a switch
/// waits for the next month, on `pending` from `plan_changes_at`.
pub(crate) fn to_wire(
    s: &subscriptions::Model,
    slug: &str,
    plan: &plan_rows::Model,
    pending: Option<&plan_rows::Model>,
) -> Subscription {
    Subscription {
        id: s.id.to_string(),
        api_id: s.api_id.to_string(),
        slug: slug.to_owned(),
        plan: Some(plans::to_wire(plan)),
        created_at: rfc3339(s.created_at),
        pending_plan: pending.map(plans::to_wire),
        plan_changes_at: pending.and(s.plan_changes_at).map(rfc3339),
    }
}

/// The plan `wanted` names among an API's plans: its id or its name; the free plan when
/// `wanted` is empty.
fn pick<'a>(plans: &'a [plan_rows::Model], wanted: &str) -> Option<&'a plan_rows::Model> {
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return plans.iter().find(|p| p.name == FREE);
    }
    let id: Option<Uuid> = wanted.parse().ok();
    plans.iter().find(|p| Some(p.id) == id).or_else(|| plans.iter().find(|p| p.name == wanted))
}

fn is_unique_violation(e: &sea_orm::DbErr) -> bool {
    matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

/// Subscribes the caller to a plan of the public API `slug` (their own included), or
/// switches the plan of their subscription to it: an upgrade at once, any other switch at
/// the start of the next month (see [`history::is_upgrade`]); asking for the plan in force
/// again cancels a pending switch. A private or unknown API is not found.
pub(crate) async fn subscribe(market: &Market, user: Uuid, req: SubscribeRequest) -> Result<Subscription> {
    let db = &market.db;
    let not_found = || Error::kind(Kind::NotFound, "no such API");
    let slug = req.slug.trim();
    if slug.is_empty() || slug.len() > 80 {
        return Err(not_found());
    }
    let api = apis::Entity::find()
        .filter(apis::Column::Slug.eq(slug))
        .filter(apis::Column::Public.eq(true))
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let plans = plans::of_api(db, api.id).await?;
    let plan = pick(&plans, &req.plan).ok_or_else(|| Error::kind(Kind::NotFound, "no such plan"))?;
    let now = market.clock.now();
    settle(market).await?;
    let existing = subscriptions::Entity::find()
        .filter(subscriptions::Column::UserId.eq(user))
        .filter(subscriptions::Column::ApiId.eq(api.id))
        .one(db)
        .await?;
    let answer = match existing {
        Some(s) => switch(market, &api, &plans, s, plan, now).await?,
        None => {
            let s = create(market, &api, user, plan, now).await?;
            to_wire(&s, &api.slug, plan, None)
        }
    };
    access::publish_now(market).await;
    Ok(answer)
}

/// A first subscription to `api`, with the first row of its plan history.
async fn create(
    market: &Market,
    api: &apis::Model,
    user: Uuid,
    plan: &plan_rows::Model,
    now: DateTime<Utc>,
) -> Result<subscriptions::Model> {
    let held = subscriptions::Entity::find().filter(subscriptions::Column::UserId.eq(user)).count(&market.db).await?;
    if held >= MAX_SUBSCRIPTIONS_PER_USER {
        return Err(Error::kind(Kind::Conflict, format!("you hold {MAX_SUBSCRIPTIONS_PER_USER} subscriptions, the most allowed")));
    }
    let s = subscriptions::Model {
        id: Uuid::now_v7(),
        user_id: user,
        api_id: api.id,
        plan_id: plan.id,
        created_at: now,
        pending_plan_id: None,
        plan_changes_at: None,
    };
    let txn = market.db.begin().await?;
    match subscriptions::Entity::insert(s.clone().into_active_model()).exec_without_returning(&txn).await {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::kind(Kind::Conflict, "you subscribed to this API meanwhile; try again"));
        }
        Err(e) => return Err(e.into()),
    }
    history::record(&txn, history::change(&s, &api.slug, None, plan, now, now)).await?;
    txn.commit().await?;
    tracing::info!(subscription_id = %s.id, api_id = %api.id, plan_id = %plan.id, user_id = %user, "subscribed");
    Ok(s)
}

/// What a second subscribe does to a subscription.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// An upgrade: the plan changes now.
    Now,
    /// Any other switch: the plan changes at this time.
    Later(DateTime<Utc>),
    /// The plan in force was asked for again: a pending switch is called off.
    Cancel,
}

/// Switches `s` to `plan`, recording the change in its history in the same transaction.
async fn switch(
    market: &Market,
    api: &apis::Model,
    plans: &[plan_rows::Model],
    s: subscriptions::Model,
    plan: &plan_rows::Model,
    now: DateTime<Utc>,
) -> Result<Subscription> {
    use subscriptions::Column as C;
    let current =
        plans.iter().find(|p| p.id == s.plan_id).ok_or_else(|| Error::Internal("a subscription's plan is missing".into()))?;
    let pending = s.pending_plan_id.and_then(|id| plans.iter().find(|p| p.id == id));
    let step = if plan.id == current.id {
        if pending.is_none() {
            return Err(Error::kind(Kind::Conflict, format!("you are already subscribed to the {:?} plan", plan.name)));
        }
        Step::Cancel
    } else if pending.is_some_and(|p| p.id == plan.id) {
        return Err(Error::kind(Kind::Conflict, format!("you are already switching to the {:?} plan", plan.name)));
    } else {
        match history::takes_effect(current, plan, now) {
            at if at <= now => Step::Now,
            at => Step::Later(at),
        }
    };
    let none_at: Option<DateTime<Utc>> = None;
    let (plan_id, pending_id, changes_at) = match step {
        Step::Now => (plan.id, None, none_at),
        Step::Later(at) => (current.id, Some(plan.id), Some(at)),
        Step::Cancel => (current.id, None, none_at),
    };
    let txn = market.db.begin().await?;
    // Only if nobody changed it since it was read.
    let same_pending = match s.pending_plan_id {
        Some(p) => C::PendingPlanId.eq(p),
        None => C::PendingPlanId.is_null(),
    };
    let done = subscriptions::Entity::update_many()
        .col_expr(C::PlanId, Expr::value(plan_id))
        .col_expr(C::PendingPlanId, Expr::value(pending_id))
        .col_expr(C::PlanChangesAt, Expr::value(changes_at))
        .filter(C::Id.eq(s.id))
        .filter(C::PlanId.eq(s.plan_id))
        .filter(same_pending)
        .exec(&txn)
        .await?;
    if done.rows_affected == 0 {
        return Err(Error::kind(Kind::Conflict, "your subscription changed meanwhile; try again"));
    }
    history::drop_pending(&txn, s.id, now).await?;
    if let Step::Now | Step::Later(_) = step {
        let at = changes_at.unwrap_or(now);
        history::record(&txn, history::change(&s, &api.slug, Some(current.id), plan, at, now)).await?;
    }
    txn.commit().await?;
    tracing::info!(subscription_id = %s.id, api_id = %api.id, plan_id = %plan.id, step = ?step, "subscription switched plans");
    let s = subscriptions::Model { plan_id, pending_plan_id: pending_id, plan_changes_at: changes_at, ..s };
    let in_force = if plan_id == plan.id { plan } else { current };
    Ok(to_wire(&s, &api.slug, in_force, pending_id.map(|_| plan)))
}

/// Puts into force the pending switches whose time has come; the access table follows.
pub(crate) async fn settle(market: &Market) -> Result<()> {
    if history::settle(&market.db, market.clock.now()).await? > 0 {
        market.access.mark_stale();
    }
    Ok(())
}

/// Deletes every subscription to an API (in the caller's transaction, as the API goes).
pub(crate) async fn delete_of_api(db: &impl ConnectionTrait, api_id: Uuid) -> Result<()> {
    subscriptions::Entity::delete_many().filter(subscriptions::Column::ApiId.eq(api_id)).exec(db).await?;
    Ok(())
}

/// A subscription with its API and current plan.
pub(crate) struct Held {
    /// The subscription.
    pub sub: subscriptions::Model,
    /// The API's slug.
    pub slug: String,
    /// Its plan in force.
    pub plan: plan_rows::Model,
    /// The plan it switches to at `sub.plan_changes_at`, if any.
    pub pending: Option<plan_rows::Model>,
}

/// The user's subscriptions, oldest first, with their APIs' slugs, plans in force and
/// pending plans (call [`settle`] first to see switches that are due in force).
pub(crate) async fn of_user(db: &impl ConnectionTrait, user: Uuid) -> Result<Vec<Held>> {
    let subs = subscriptions::Entity::find()
        .filter(subscriptions::Column::UserId.eq(user))
        .order_by_asc(subscriptions::Column::CreatedAt)
        .order_by_asc(subscriptions::Column::Id)
        .all(db)
        .await?;
    if subs.is_empty() {
        return Ok(Vec::new());
    }
    let slugs: HashMap<Uuid, String> = apis::Entity::find()
        .filter(apis::Column::Id.is_in(subs.iter().map(|s| s.api_id)))
        .all(db)
        .await?
        .into_iter()
        .map(|a| (a.id, a.slug))
        .collect();
    let plans: HashMap<Uuid, plan_rows::Model> = plan_rows::Entity::find()
        .filter(plan_rows::Column::Id.is_in(subs.iter().flat_map(|s| [Some(s.plan_id), s.pending_plan_id]).flatten()))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    Ok(subs
        .into_iter()
        .filter_map(|sub| {
            let plan = plans.get(&sub.plan_id).cloned()?;
            let slug = slugs.get(&sub.api_id).cloned().unwrap_or_default();
            let pending = sub.pending_plan_id.and_then(|id| plans.get(&id).cloned());
            Some(Held { sub, slug, plan, pending })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_picked_by_id_or_name_and_free_by_default() {
        let api = Uuid::now_v7();
        let free = plans::free(api, Utc::now());
        let pro = plan_rows::Model { id: Uuid::now_v7(), name: "pro".into(), price_minor: 500, ..free.clone() };
        let all = [free.clone(), pro.clone()];
        assert_eq!(pick(&all, "").map(|p| p.id), Some(free.id));
        assert_eq!(pick(&all, " pro ").map(|p| p.id), Some(pro.id));
        assert_eq!(pick(&all, &pro.id.to_string()).map(|p| p.id), Some(pro.id));
        assert_eq!(pick(&all, "gold").map(|p| p.id), None);
        assert_eq!(pick(&all, &Uuid::now_v7().to_string()).map(|p| p.id), None);
    }
}
