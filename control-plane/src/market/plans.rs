//! Plans of an API: the free plan every API gets, new plans by the API's owner, and the
//! list anyone may read for a public API.
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder};
use souq_proto::{
    Kind,
    market::{CreatePlanRequest, Plan},
};
use uuid::Uuid;

use super::{Market, check_label, to_i64, to_u64};
use crate::{
    apis as api_core,
    clock::rfc3339,
    entity::{apis, plans},
    error::{Error, Result},
};

/// The currencies prices may be in; all have two decimals.
pub const CURRENCIES: [&str; 4] = ["USD", "SAR", "AED", "EGP"];
/// Most plans one API may have.
pub const MAX_PLANS_PER_API: u64 = 20;
/// Highest monthly price, in minor units.
pub const MAX_PRICE_MINOR: u64 = 1_000_000_000_000;
/// Highest monthly quota, in calls.
pub const MAX_MONTHLY_QUOTA: u64 = 1_000_000_000;
/// Highest rate limit, in calls per minute.
pub const MAX_RATE_LIMIT: u32 = 10_000_000;
/// The name of the plan every API is created with.
pub const FREE: &str = "free";

/// The wire form of a plan.
pub(crate) fn to_wire(p: &plans::Model) -> Plan {
    Plan {
        id: p.id.to_string(),
        api_id: p.api_id.to_string(),
        name: p.name.clone(),
        price_minor: to_u64(p.price_minor),
        currency: p.currency.clone(),
        monthly_quota: to_u64(p.monthly_quota),
        rate_limit_per_minute: u32::try_from(p.rate_limit_per_minute).unwrap_or(0),
        created_at: rfc3339(p.created_at),
    }
}

/// The free plan of a new API: no price, 1000 calls a month, 60 a minute.
pub(crate) fn free(api_id: Uuid, now: DateTime<Utc>) -> plans::Model {
    plans::Model {
        id: Uuid::now_v7(),
        api_id,
        name: FREE.into(),
        price_minor: 0,
        currency: "USD".into(),
        monthly_quota: 1000,
        rate_limit_per_minute: 60,
        created_at: now,
    }
}

/// Inserts a plan (in the caller's transaction, for the free plan of a new API).
pub(crate) async fn insert(db: &impl ConnectionTrait, plan: plans::Model) -> Result<()> {
    plans::Entity::insert(plan.into_active_model()).exec_without_returning(db).await?;
    Ok(())
}

/// Deletes every plan of an API (in the caller's transaction, as the API goes).
pub(crate) async fn delete_of_api(db: &impl ConnectionTrait, api_id: Uuid) -> Result<()> {
    plans::Entity::delete_many().filter(plans::Column::ApiId.eq(api_id)).exec(db).await?;
    Ok(())
}

/// A checked plan of `api_id` from the request.
fn check(api_id: Uuid, req: &CreatePlanRequest, now: DateTime<Utc>) -> Result<plans::Model> {
    let name = check_label("name", &req.name)?;
    let currency = req.currency.trim().to_ascii_uppercase();
    if !CURRENCIES.contains(&currency.as_str()) {
        return Err(Error::invalid("currency", format!("one of {}", CURRENCIES.join(", "))));
    }
    if req.price_minor > MAX_PRICE_MINOR {
        return Err(Error::invalid("price_minor", format!("at most {MAX_PRICE_MINOR} (minor units)")));
    }
    if !(1..=MAX_MONTHLY_QUOTA).contains(&req.monthly_quota) {
        return Err(Error::invalid("monthly_quota", format!("1 to {MAX_MONTHLY_QUOTA} calls")));
    }
    if !(1..=MAX_RATE_LIMIT).contains(&req.rate_limit_per_minute) {
        return Err(Error::invalid("rate_limit_per_minute", format!("1 to {MAX_RATE_LIMIT} calls a minute")));
    }
    Ok(plans::Model {
        id: Uuid::now_v7(),
        api_id,
        name,
        price_minor: to_i64(req.price_minor),
        currency,
        monthly_quota: to_i64(req.monthly_quota),
        rate_limit_per_minute: i32::try_from(req.rate_limit_per_minute).unwrap_or(i32::MAX),
        created_at: now,
    })
}

/// Adds a plan to the caller's API. Plans never change once made, so no subscriber's
/// limits (nor the access table) move with a new one.
pub(crate) async fn create(market: &Market, owner: Uuid, req: CreatePlanRequest) -> Result<Plan> {
    let db = &market.db;
    let api = api_core::owned(db, owner, &req.api_id).await?;
    let plan = check(api.id, &req, market.clock.now())?;
    let taken = || Error::kind(Kind::Conflict, format!("this API already has a plan named {:?}", plan.name));
    let count = plans::Entity::find().filter(plans::Column::ApiId.eq(api.id)).count(db).await?;
    if count >= MAX_PLANS_PER_API {
        return Err(Error::kind(Kind::Conflict, format!("this API has {MAX_PLANS_PER_API} plans, the most allowed")));
    }
    let same_name = plans::Entity::find()
        .filter(plans::Column::ApiId.eq(api.id))
        .filter(plans::Column::Name.eq(&plan.name))
        .one(db)
        .await?;
    if same_name.is_some() {
        return Err(taken());
    }
    match insert(db, plan.clone()).await {
        Ok(()) => {}
        // Made by a concurrent call between the check and the insert.
        Err(Error::Db(e)) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) => return Err(taken()),
        Err(e) => return Err(e),
    }
    tracing::info!(api_id = %api.id, plan_id = %plan.id, price_minor = plan.price_minor, currency = %plan.currency, "plan created");
    Ok(to_wire(&plan))
}

/// The plans of an API, oldest (the free plan) first.
pub(crate) async fn of_api(db: &impl ConnectionTrait, api_id: Uuid) -> Result<Vec<plans::Model>> {
    Ok(plans::Entity::find()
        .filter(plans::Column::ApiId.eq(api_id))
        .order_by_asc(plans::Column::CreatedAt)
        .order_by_asc(plans::Column::Id)
        .all(db)
        .await?)
}

/// The plans of API `id`: any caller (even without a token) may read a public API's; a
/// private API's are its owner's alone, and anyone else is told it does not exist.
pub(crate) async fn list(market: &Market, caller: Option<Uuid>, id: &str) -> Result<Vec<Plan>> {
    let not_found = || Error::kind(Kind::NotFound, "no such API");
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let api = apis::Entity::find_by_id(id).one(&market.db).await?.ok_or_else(not_found)?;
    if !api.public && caller != Some(api.owner_id) {
        return Err(not_found());
    }
    Ok(of_api(&market.db, api.id).await?.iter().map(to_wire).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> CreatePlanRequest {
        CreatePlanRequest {
            api_id: String::new(),
            name: "pro".into(),
            price_minor: 1999,
            currency: "sar".into(),
            monthly_quota: 100_000,
            rate_limit_per_minute: 600,
        }
    }

    fn field_of(r: Result<plans::Model>) -> String {
        match r {
            Err(Error::Wire(w)) => w.field.unwrap_or_default(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn plans_are_checked_field_by_field() {
        let now = Utc::now();
        let ok = check(Uuid::nil(), &req(), now).unwrap();
        assert_eq!((ok.currency.as_str(), ok.price_minor, ok.rate_limit_per_minute), ("SAR", 1999, 600));
        let bad = |f: fn(&mut CreatePlanRequest)| {
            let mut r = req();
            f(&mut r);
            field_of(check(Uuid::nil(), &r, now))
        };
        assert_eq!(bad(|r| r.name = String::new()), "name");
        assert_eq!(bad(|r| r.currency = "EUR".into()), "currency");
        assert_eq!(bad(|r| r.price_minor = MAX_PRICE_MINOR + 1), "price_minor");
        assert_eq!(bad(|r| r.monthly_quota = 0), "monthly_quota");
        assert_eq!(bad(|r| r.monthly_quota = MAX_MONTHLY_QUOTA + 1), "monthly_quota");
        assert_eq!(bad(|r| r.rate_limit_per_minute = 0), "rate_limit_per_minute");
        assert_eq!(bad(|r| r.rate_limit_per_minute = MAX_RATE_LIMIT + 1), "rate_limit_per_minute");
        let free = free(Uuid::nil(), now);
        assert_eq!((free.name.as_str(), free.price_minor, free.monthly_quota, free.rate_limit_per_minute), ("free", 0, 1000, 60));
    }
}
