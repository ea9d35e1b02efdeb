//! Usage views built on the committed windows: the provider's view of one API and the
//! consumer's view of this month (statements are in `statement`). A plan's price is a flat
//! monthly fee; downgrades wait for the next month and upgrades pay the difference, so this
//! month costs the price of the plan in force now.
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, DurationRound, Utc};
use futures_util::TryStreamExt;
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter};
use souq_proto::market::{ApiUsage, ConsumerUsage, KeyUsage, SubscriptionUsage, UsageWindow};
use uuid::Uuid;

use super::{Market, Month, calls, histogram::Histogram, keys, subscriptions, to_u64};
use crate::{
    apis,
    clock::rfc3339,
    entity::usage_windows,
    error::{Error, Result},
};

/// Hours the provider's view covers when the request names none.
pub const DEFAULT_HOURS: u32 = 24;
/// Most hours the provider's view covers: 31 days.
pub const MAX_HOURS: u32 = 24 * 31;

/// One hour of an API's usage, summed over its windows.
#[derive(Clone, Debug, Default, PartialEq)]
struct Hour {
    calls: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    latency: Histogram,
}

impl Hour {
    fn add(&mut self, row: &usage_windows::Model) {
        self.calls = self.calls.saturating_add(to_u64(row.calls));
        self.errors = self.errors.saturating_add(to_u64(row.errors));
        self.bytes_in = self.bytes_in.saturating_add(to_u64(row.bytes_in));
        self.bytes_out = self.bytes_out.saturating_add(to_u64(row.bytes_out));
        if let Some(h) = Histogram::from_json(&row.latency_hist) {
            self.latency.merge(&h);
        }
    }
}

/// The provider's view from the hours that saw calls: totals, and each hour oldest first
/// with p50 and p95 from its merged histogram (see [`Histogram::percentile_ms`]).
fn api_usage(api_id: String, hours: &BTreeMap<DateTime<Utc>, Hour>) -> ApiUsage {
    let windows: Vec<UsageWindow> = hours
        .iter()
        .map(|(start, h)| UsageWindow {
            start: rfc3339(*start),
            calls: h.calls,
            errors: h.errors,
            p50_ms: h.latency.percentile_ms(50),
            p95_ms: h.latency.percentile_ms(95),
            bytes_in: h.bytes_in,
            bytes_out: h.bytes_out,
        })
        .collect();
    let calls = windows.iter().fold(0u64, |n, w| n.saturating_add(w.calls));
    let errors = windows.iter().fold(0u64, |n, w| n.saturating_add(w.errors));
    ApiUsage { api_id, calls, errors, windows }
}

/// The owner's view of API `id` over the last `hours` hours (the current one included);
/// only hours with calls are listed.
pub(crate) async fn of_api(market: &Market, owner: Uuid, id: &str, hours: u32) -> Result<ApiUsage> {
    let hours = if hours == 0 { DEFAULT_HOURS } else { hours };
    if hours > MAX_HOURS {
        return Err(Error::invalid("hours", format!("1 to {MAX_HOURS}")));
    }
    let api = apis::owned(&market.db, owner, id).await?;
    let now = market.clock.now();
    let this_hour = now.duration_trunc(chrono::Duration::hours(1)).unwrap_or(now);
    let from = this_hour - chrono::Duration::hours(i64::from(hours) - 1);
    let mut rows = usage_windows::Entity::find()
        .filter(usage_windows::Column::ApiId.eq(api.id.to_string()))
        .filter(usage_windows::Column::WindowStart.gte(from))
        .stream(&market.db)
        .await?;
    let mut by_hour: BTreeMap<DateTime<Utc>, Hour> = BTreeMap::new();
    while let Some(row) = rows.try_next().await? {
        by_hour.entry(row.window_start).or_default().add(&row);
    }
    Ok(api_usage(api.id.to_string(), &by_hour))
}

/// The caller's view of this month: calls per key (live keys, and revoked ones that made
/// calls), and per subscription with its quota left and its cost so far (the flat monthly
/// price of the plan in force, the month's dearest; a pending switch is shown with it).
pub(crate) async fn mine(market: &Market, user: Uuid) -> Result<ConsumerUsage> {
    let month = Month::of(market.clock.now());
    let db = &market.db;
    subscriptions::settle(market).await?;
    let own = Condition::all().add(usage_windows::Column::UserId.eq(user.to_string())).add(usage_windows::Column::KeyId.ne(""));
    let key_calls = calls::in_month(db, usage_windows::Column::KeyId, own, month).await?;
    let keys = keys::listed(db, user)
        .await?
        .into_iter()
        .filter_map(|k| {
            let calls = key_calls.get(&k.id.to_string()).copied().unwrap_or(0);
            (k.revoked_at.is_none() || calls > 0).then(|| KeyUsage { key_id: k.id.to_string(), prefix: k.prefix, calls })
        })
        .collect();
    let held = subscriptions::of_user(db, user).await?;
    let sub_calls = calls_of(db, &held, month).await?;
    let subscriptions = held
        .iter()
        .map(|h| {
            let calls = sub_calls.get(&h.sub.id.to_string()).copied().unwrap_or(0);
            SubscriptionUsage {
                subscription: Some(subscriptions::to_wire(&h.sub, &h.slug, &h.plan, h.pending.as_ref())),
                calls,
                quota_left: to_u64(h.plan.monthly_quota).saturating_sub(calls),
                cost_minor: to_u64(h.plan.price_minor),
                currency: h.plan.currency.clone(),
            }
        })
        .collect();
    Ok(ConsumerUsage { month: month.to_string(), keys, subscriptions })
}

async fn calls_of(db: &impl ConnectionTrait, held: &[subscriptions::Held], month: Month) -> Result<HashMap<String, u64>> {
    if held.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<String> = held.iter().map(|h| h.sub.id.to_string()).collect();
    let only = Condition::all().add(usage_windows::Column::SubscriptionId.is_in(ids));
    calls::in_month(db, usage_windows::Column::SubscriptionId, only, month).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(start: DateTime<Utc>, calls: i64, errors: i64, latencies: &[u64]) -> usage_windows::Model {
        let mut h = Histogram::default();
        latencies.iter().for_each(|&l| h.record(l));
        usage_windows::Model {
            id: Uuid::now_v7(),
            window_start: start,
            api_id: String::new(),
            user_id: String::new(),
            key_id: String::new(),
            subscription_id: String::new(),
            kind: "call".into(),
            calls,
            errors,
            bytes_in: 1,
            bytes_out: 2,
            cpu_us: 0,
            latency_hist: h.to_json(),
        }
    }

    #[test]
    fn hours_merge_their_windows_and_histograms() {
        let t0 = DateTime::from_timestamp(7_200, 0).unwrap();
        let t1 = DateTime::from_timestamp(10_800, 0).unwrap();
        let mut hours: BTreeMap<DateTime<Utc>, Hour> = BTreeMap::new();
        for r in [row(t1, 1, 1, &[3_000_000]), row(t0, 2, 0, &[100, 100]), row(t0, 1, 0, &[40_000])] {
            hours.entry(r.window_start).or_default().add(&r);
        }
        let u = api_usage("a".into(), &hours);
        assert_eq!((u.calls, u.errors, u.windows.len()), (4, 1, 2));
        let w0 = &u.windows[0];
        assert_eq!(w0.start, "1970-01-01T02:00:00Z");
        assert_eq!((w0.calls, w0.p50_ms, w0.p95_ms, w0.bytes_in, w0.bytes_out), (3, 0.25, 50.0, 2, 4));
        assert_eq!(u.windows[1].p95_ms, 5_000.0);
    }
}
