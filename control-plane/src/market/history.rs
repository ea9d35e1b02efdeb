//! Plan history: which plan each subscription was on from when (`plan_changes`), the rule
//! that says when a switch takes effect, settling pending switches whose time has come,
//! and closing the history of an API's subscriptions when the API is deleted.
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};
use uuid::Uuid;

use super::Month;
use crate::{
    entity::{apis, plan_changes, plans, subscriptions},
    error::Result,
};

/// Subscriptions ended per statement when an API is deleted.
const END_PAGE: u64 = 500;

/// Whether moving from `from` to `to` is an upgrade, which takes effect at once: a paid
/// plan after a free one, or a dearer plan in the same currency. Any other switch (cheaper,
/// as dear, or in another currency) waits for the next month, so a month is never billed
/// below a plan that was in force in it.
pub fn is_upgrade(from: &plans::Model, to: &plans::Model) -> bool {
    to.price_minor > 0 && (from.price_minor == 0 || (from.currency == to.currency && to.price_minor > from.price_minor))
}

/// When a switch asked for at `now` takes effect: at once for an upgrade, else at the
/// start of the next month (UTC).
pub fn takes_effect(from: &plans::Model, to: &plans::Model, now: DateTime<Utc>) -> DateTime<Utc> {
    if is_upgrade(from, to) { now } else { Month::of(now).end() }
}

/// The history row of `sub` moving from `from` to plan `to` at `effective_at`.
pub(crate) fn change(
    sub: &subscriptions::Model,
    slug: &str,
    from: Option<Uuid>,
    to: &plans::Model,
    effective_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> plan_changes::Model {
    plan_changes::Model {
        id: Uuid::now_v7(),
        subscription_id: sub.id,
        user_id: sub.user_id,
        api_id: sub.api_id,
        slug: slug.to_owned(),
        from_plan_id: from,
        to_plan_id: Some(to.id),
        plan_name: to.name.clone(),
        price_minor: to.price_minor,
        currency: to.currency.clone(),
        effective_at,
        created_at: now,
    }
}

/// Records a row (in the caller's transaction, with the subscription's change).
pub(crate) async fn record(db: &impl ConnectionTrait, row: plan_changes::Model) -> Result<()> {
    plan_changes::Entity::insert(row.into_active_model()).exec_without_returning(db).await?;
    Ok(())
}

/// Forgets the switches of subscription `id` that have not taken effect by `now`.
pub(crate) async fn drop_pending(db: &impl ConnectionTrait, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    plan_changes::Entity::delete_many()
        .filter(plan_changes::Column::SubscriptionId.eq(id))
        .filter(plan_changes::Column::EffectiveAt.gt(now))
        .exec(db)
        .await?;
    Ok(())
}

/// Puts into force the pending switches whose time has come; answers how many. The
/// history already holds them (written when asked for), so statements never wait on this;
/// the access table and the views of subscriptions do.
pub(crate) async fn settle(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64> {
    use subscriptions::Column as C;
    let done = subscriptions::Entity::update_many()
        .col_expr(C::PlanId, Expr::col(C::PendingPlanId))
        .col_expr(C::PendingPlanId, Expr::value(Option::<Uuid>::None))
        .col_expr(C::PlanChangesAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(C::PendingPlanId.is_not_null())
        .filter(C::PlanChangesAt.lte(now))
        .exec(db)
        .await?;
    Ok(done.rows_affected)
}

/// Closes the history of every subscription to an API about to be deleted (in the
/// caller's transaction): pending switches go, and each subscription ends at `now`. Its
/// past periods stay, so the consumers' statements keep their lines.
pub(crate) async fn end_of_api(db: &impl ConnectionTrait, api_id: Uuid, now: DateTime<Utc>) -> Result<()> {
    plan_changes::Entity::delete_many()
        .filter(plan_changes::Column::ApiId.eq(api_id))
        .filter(plan_changes::Column::EffectiveAt.gt(now))
        .exec(db)
        .await?;
    let Some(api) = apis::Entity::find_by_id(api_id).one(db).await? else {
        return Ok(());
    };
    // A page at a time, by id: an API may have many subscribers.
    let mut after = Uuid::nil();
    loop {
        let subs = subscriptions::Entity::find()
            .filter(subscriptions::Column::ApiId.eq(api_id))
            .filter(subscriptions::Column::Id.gt(after))
            .order_by_asc(subscriptions::Column::Id)
            .limit(END_PAGE)
            .all(db)
            .await?;
        let Some(last) = subs.last() else { break };
        after = last.id;
        let ends = subs.iter().map(|s| {
            plan_changes::Model {
                id: Uuid::now_v7(),
                subscription_id: s.id,
                user_id: s.user_id,
                api_id,
                slug: api.slug.clone(),
                from_plan_id: Some(s.plan_id),
                to_plan_id: None,
                plan_name: String::new(),
                price_minor: 0,
                currency: String::new(),
                effective_at: now,
                created_at: now,
            }
            .into_active_model()
        });
        plan_changes::Entity::insert_many(ends).exec_without_returning(db).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::plans::free;

    fn plan(price_minor: i64, currency: &str) -> plans::Model {
        plans::Model { id: Uuid::now_v7(), price_minor, currency: currency.into(), name: "p".into(), ..free(Uuid::nil(), Utc::now()) }
    }

    #[test]
    fn only_a_dearer_plan_applies_at_once() {
        let now: DateTime<Utc> = "2026-12-31T10:00:00Z".parse().unwrap();
        let next_month: DateTime<Utc> = "2027-01-01T00:00:00Z".parse().unwrap();
        let (free, pro, max) = (plan(0, "USD"), plan(4999, "SAR"), plan(9999, "SAR"));
        assert_eq!(takes_effect(&free, &pro, now), now, "free to paid, any currency");
        assert_eq!(takes_effect(&pro, &max, now), now);
        assert_eq!(takes_effect(&pro, &free, now), next_month, "a downgrade waits");
        assert_eq!(takes_effect(&max, &pro, now), next_month);
        assert_eq!(takes_effect(&pro, &plan(4999, "SAR"), now), next_month, "as dear");
        assert_eq!(takes_effect(&pro, &plan(5000, "USD"), now), next_month, "another currency");
        assert_eq!(takes_effect(&free, &plan(0, "SAR"), now), next_month, "free to free");
    }
}
