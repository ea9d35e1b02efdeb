//! Subscriptions: a consumer subscribes to a public API's plan, one subscription per API;
//! subscribing again switches its plan.
use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use souq_proto::{
    Kind,
    market::{SubscribeRequest, Subscription},
};
use uuid::Uuid;

use super::{
    Market, access,
    plans::{self, FREE},
};
use crate::{
    clock::rfc3339,
    entity::{apis, plans as plan_rows, subscriptions},
    error::{Error, Result},
};

/// Most subscriptions one user may hold.
pub const MAX_SUBSCRIPTIONS_PER_USER: u64 = 100;

/// The wire form of a subscription on `plan` to the API `slug`.
pub(crate) fn to_wire(s: &subscriptions::Model, slug: &str, plan: &plan_rows::Model) -> Subscription {
    Subscription {
        id: s.id.to_string(),
        api_id: s.api_id.to_string(),
        slug: slug.to_owned(),
        plan: Some(plans::to_wire(plan)),
        created_at: rfc3339(s.created_at),
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
/// switches the plan of their subscription to it. A private or unknown API is not found.
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
    let existing = subscriptions::Entity::find()
        .filter(subscriptions::Column::UserId.eq(user))
        .filter(subscriptions::Column::ApiId.eq(api.id))
        .one(db)
        .await?;
    let sub = match existing {
        Some(s) if s.plan_id == plan.id => {
            return Err(Error::kind(Kind::Conflict, format!("you are already subscribed to the {:?} plan", plan.name)));
        }
        Some(s) => {
            let done = subscriptions::Entity::update_many()
                .col_expr(subscriptions::Column::PlanId, Expr::value(plan.id))
                .filter(subscriptions::Column::Id.eq(s.id))
                .filter(subscriptions::Column::PlanId.eq(s.plan_id))
                .exec(db)
                .await?;
            if done.rows_affected == 0 {
                return Err(Error::kind(Kind::Conflict, "your subscription changed meanwhile; try again"));
            }
            tracing::info!(subscription_id = %s.id, api_id = %api.id, plan_id = %plan.id, "subscription switched plans");
            subscriptions::Model { plan_id: plan.id, ..s }
        }
        None => {
            let held = subscriptions::Entity::find().filter(subscriptions::Column::UserId.eq(user)).count(db).await?;
            if held >= MAX_SUBSCRIPTIONS_PER_USER {
                return Err(Error::kind(
                    Kind::Conflict,
                    format!("you hold {MAX_SUBSCRIPTIONS_PER_USER} subscriptions, the most allowed"),
                ));
            }
            let s = subscriptions::Model { id: Uuid::now_v7(), user_id: user, api_id: api.id, plan_id: plan.id, created_at: market.clock.now() };
            match subscriptions::Entity::insert(s.clone().into_active_model()).exec_without_returning(db).await {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(Error::kind(Kind::Conflict, "you subscribed to this API meanwhile; try again"));
                }
                Err(e) => return Err(e.into()),
            }
            tracing::info!(subscription_id = %s.id, api_id = %api.id, plan_id = %plan.id, user_id = %user, "subscribed");
            s
        }
    };
    access::publish_now(market).await;
    Ok(to_wire(&sub, &api.slug, plan))
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
    /// Its current plan.
    pub plan: plan_rows::Model,
}

/// The user's subscriptions, oldest first, with their APIs' slugs and current plans.
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
        .filter(plan_rows::Column::Id.is_in(subs.iter().map(|s| s.plan_id)))
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
            Some(Held { sub, slug, plan })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

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
