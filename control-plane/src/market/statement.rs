//! Monthly statements from the plan history: each subscription's month is split into the
//! periods its plans were in force, each line billed at its own plan, with the calls of its
//! hours. A plan's price is a flat monthly fee; an upgrade in the month costs the
//! difference to the dearer plan, so a month costs the dearest plan that was in force in it.
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use futures_util::TryStreamExt;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};
use souq_proto::market::{CurrencyTotal, Statement, StatementLine};
use uuid::Uuid;

use super::{Market, Month, calls, subscriptions, to_u64};
use crate::{
    clock::rfc3339,
    entity::{plan_changes, usage_windows},
    error::{Error, Result},
};

/// One subscription's history as far as one month needs it.
#[derive(Debug, Default)]
struct Trail {
    /// The newest row in force at the month's start.
    before: Option<plan_changes::Model>,
    /// The rows that take effect inside the month.
    within: Vec<plan_changes::Model>,
}

/// The plan history of one user folded for one month: only what the month needs is kept,
/// so the history streams through.
#[derive(Debug)]
pub struct Ledger {
    month: Month,
    trails: BTreeMap<Uuid, Trail>,
}

/// A period of one subscription in the month, on one plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    /// The history row that began it.
    pub row: plan_changes::Model,
    /// From (inclusive) ...
    pub from: DateTime<Utc>,
    /// ... to (exclusive).
    pub until: DateTime<Utc>,
    /// What it costs, in minor units of the row's currency.
    pub cost_minor: u64,
    /// Calls counted in it.
    pub calls: u64,
}

/// Orders rows by when they take effect; rows made in the same instant by id (time-ordered).
fn order(r: &plan_changes::Model) -> (DateTime<Utc>, Uuid) {
    (r.effective_at, r.id)
}

impl Ledger {
    /// An empty ledger for `month`.
    pub fn new(month: Month) -> Self {
        Ledger { month, trails: BTreeMap::new() }
    }

    /// Takes one history row, in any order.
    pub fn push(&mut self, row: plan_changes::Model) {
        if row.effective_at >= self.month.end() {
            return;
        }
        let trail = self.trails.entry(row.subscription_id).or_default();
        if row.effective_at > self.month.start() {
            trail.within.push(row);
        } else if trail.before.as_ref().is_none_or(|b| order(b) < order(&row)) {
            trail.before = Some(row);
        }
    }

    /// The month's periods, by subscription (oldest first) then time, with their costs;
    /// calls are still 0.
    pub fn periods(mut self) -> Vec<Period> {
        let (start, end) = (self.month.start(), self.month.end());
        let mut out = Vec::new();
        for trail in self.trails.values_mut() {
            trail.within.sort_by_key(order);
            let mut spans: Vec<(&plan_changes::Model, DateTime<Utc>)> = Vec::new();
            spans.extend(trail.before.iter().map(|r| (r, start)));
            spans.extend(trail.within.iter().map(|r| (r, r.effective_at)));
            // The price already billed this month for this subscription, and its currency.
            let mut billed: Option<(i64, &str)> = None;
            for (i, (row, from)) in spans.iter().enumerate() {
                let until = spans.get(i + 1).map_or(end, |next| next.1);
                if row.to_plan_id.is_none() || *from >= until {
                    continue;
                }
                let cost = match billed {
                    Some((price, currency)) if currency == row.currency => row.price_minor.saturating_sub(price),
                    _ => row.price_minor,
                };
                billed = match billed {
                    Some((price, currency)) if currency == row.currency => Some((price.max(row.price_minor), currency)),
                    _ => Some((row.price_minor, row.currency.as_str())),
                };
                out.push(Period { row: (*row).clone(), from: *from, until, cost_minor: to_u64(cost), calls: 0 });
            }
        }
        out
    }
}

/// Adds each hour's calls (subscription id, hour start, calls) to the period in force at
/// the hour's end: the hour in which an upgrade happened counts on the new plan.
fn count_calls(periods: &mut [Period], hours: impl IntoIterator<Item = (String, DateTime<Utc>, u64)>) {
    let mut of_sub: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in periods.iter().enumerate() {
        of_sub.entry(p.row.subscription_id.to_string()).or_default().push(i);
    }
    for (sub, hour, calls) in hours {
        let Some(indices) = of_sub.get(&sub) else { continue };
        let hour_end = hour + Duration::hours(1);
        let at = indices.iter().rev().find(|&&i| periods[i].from < hour_end).or(indices.first());
        if let Some(&i) = at {
            periods[i].calls = periods[i].calls.saturating_add(calls);
        }
    }
}

/// One total per currency, in currency order; amounts of different currencies never mix.
fn totals(lines: &[StatementLine]) -> Vec<CurrencyTotal> {
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for l in lines {
        let sum = sums.entry(l.currency.as_str()).or_default();
        *sum = sum.saturating_add(l.cost_minor);
    }
    sums.into_iter().map(|(currency, amount_minor)| CurrencyTotal { currency: currency.to_owned(), amount_minor }).collect()
}

fn line(p: Period) -> StatementLine {
    StatementLine {
        subscription_id: p.row.subscription_id.to_string(),
        api_id: p.row.api_id.to_string(),
        slug: p.row.slug,
        plan: p.row.plan_name,
        calls: p.calls,
        cost_minor: p.cost_minor,
        currency: p.row.currency,
        starts_at: rfc3339(p.from),
        ends_at: rfc3339(p.until),
    }
}

/// The caller's statement for `month` (`YYYY-MM`, the current month when empty): a line
/// per period of each subscription in the month, at the plan then in force, read from the
/// plan history, so neither a later switch nor a deleted API changes it.
pub(crate) async fn statement(market: &Market, user: Uuid, month: &str) -> Result<Statement> {
    let now = Month::of(market.clock.now());
    let month = match month.trim() {
        "" => now,
        m => Month::parse(m).ok_or_else(|| Error::invalid("month", "YYYY-MM"))?,
    };
    if month > now {
        return Err(Error::invalid("month", "must not be in the future"));
    }
    let db = &market.db;
    subscriptions::settle(market).await?;
    let mut ledger = Ledger::new(month);
    let mut rows = plan_changes::Entity::find()
        .filter(plan_changes::Column::UserId.eq(user))
        .filter(plan_changes::Column::EffectiveAt.lt(month.end()))
        .order_by_asc(plan_changes::Column::EffectiveAt)
        .stream(db)
        .await?;
    while let Some(row) = rows.try_next().await? {
        ledger.push(row);
    }
    drop(rows);
    let mut periods = ledger.periods();
    if !periods.is_empty() {
        let own = Condition::all()
            .add(usage_windows::Column::UserId.eq(user.to_string()))
            .add(usage_windows::Column::SubscriptionId.ne(""));
        let hours = calls::hourly_in_month(db, usage_windows::Column::SubscriptionId, own, month).await?;
        count_calls(&mut periods, hours);
    }
    let lines: Vec<StatementLine> = periods.into_iter().map(line).collect();
    Ok(Statement { month: month.to_string(), totals: totals(&lines), lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A history row of subscription `sub` onto a plan (`None`: the end) from `when`.
    fn row(sub: Uuid, plan: Option<(&str, i64, &str)>, when: &str) -> plan_changes::Model {
        let (name, price_minor, currency) = plan.unwrap_or(("", 0, ""));
        plan_changes::Model {
            id: Uuid::now_v7(),
            subscription_id: sub,
            user_id: Uuid::nil(),
            api_id: Uuid::nil(),
            slug: "gold".into(),
            from_plan_id: None,
            to_plan_id: plan.map(|_| Uuid::now_v7()),
            plan_name: name.into(),
            price_minor,
            currency: currency.into(),
            effective_at: at(when),
            created_at: at(when),
        }
    }

    const FREE: Option<(&str, i64, &str)> = Some(("free", 0, "USD"));
    const PRO: Option<(&str, i64, &str)> = Some(("pro", 4999, "SAR"));
    const MAX: Option<(&str, i64, &str)> = Some(("max", 9999, "SAR"));

    fn summary(month: &str, rows: &[plan_changes::Model]) -> Vec<(String, String, String, u64)> {
        let mut ledger = Ledger::new(Month::parse(month).unwrap());
        // Any order.
        rows.iter().rev().cloned().for_each(|r| ledger.push(r));
        ledger.periods().into_iter().map(|p| (p.row.plan_name, rfc3339(p.from), rfc3339(p.until), p.cost_minor)).collect()
    }

    fn s(plan: &str, from: &str, until: &str, cost: u64) -> (String, String, String, u64) {
        (plan.into(), from.into(), until.into(), cost)
    }

    #[test]
    fn a_downgrade_on_the_31st_leaves_the_month_and_the_past_at_the_old_plan() {
        let sub = Uuid::now_v7();
        let rows = [
            row(sub, PRO, "2026-11-10T08:00:00Z"),
            // Asked for on 31 December, in force from 1 January.
            row(sub, FREE, "2027-01-01T00:00:00Z"),
        ];
        assert_eq!(summary("2026-11", &rows), [s("pro", "2026-11-10T08:00:00Z", "2026-12-01T00:00:00Z", 4999)]);
        assert_eq!(summary("2026-12", &rows), [s("pro", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", 4999)]);
        assert_eq!(summary("2027-01", &rows), [s("free", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", 0)]);
        assert!(summary("2026-10", &rows).is_empty(), "before the subscription");
    }

    #[test]
    fn an_upgrade_splits_the_month_and_costs_the_difference() {
        let sub = Uuid::now_v7();
        let rows = [
            row(sub, FREE, "2026-12-01T10:00:00Z"),
            row(sub, PRO, "2026-12-05T10:30:00Z"),
            row(sub, MAX, "2026-12-20T00:00:00Z"),
        ];
        assert_eq!(
            summary("2026-12", &rows),
            [
                s("free", "2026-12-01T10:00:00Z", "2026-12-05T10:30:00Z", 0),
                s("pro", "2026-12-05T10:30:00Z", "2026-12-20T00:00:00Z", 4999),
                s("max", "2026-12-20T00:00:00Z", "2027-01-01T00:00:00Z", 5000),
            ]
        );
        // Two rows in one instant: the later one holds, the empty period is left out.
        let same = [row(sub, FREE, "2026-12-01T10:00:00Z"), row(sub, PRO, "2026-12-01T10:00:00Z")];
        assert_eq!(summary("2026-12", &same), [s("pro", "2026-12-01T10:00:00Z", "2027-01-01T00:00:00Z", 4999)]);
    }

    #[test]
    fn a_deleted_api_keeps_its_past_lines_and_bills_nothing_after() {
        let (sub, other) = (Uuid::now_v7(), Uuid::now_v7());
        let rows = [
            row(sub, PRO, "2026-11-02T00:00:00Z"),
            row(sub, None, "2026-12-15T12:00:00Z"),
            row(other, FREE, "2026-12-03T00:00:00Z"),
        ];
        assert_eq!(summary("2026-11", &rows), [s("pro", "2026-11-02T00:00:00Z", "2026-12-01T00:00:00Z", 4999)]);
        assert_eq!(
            summary("2026-12", &rows),
            [s("pro", "2026-12-01T00:00:00Z", "2026-12-15T12:00:00Z", 4999), s("free", "2026-12-03T00:00:00Z", "2027-01-01T00:00:00Z", 0)]
        );
        assert_eq!(summary("2027-01", &rows), [s("free", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", 0)]);
    }

    #[test]
    fn hours_count_on_the_plan_in_force_at_their_end() {
        let sub = Uuid::now_v7();
        let rows = [row(sub, FREE, "2026-12-01T10:20:00Z"), row(sub, PRO, "2026-12-05T10:30:00Z")];
        let mut ledger = Ledger::new(Month::parse("2026-12").unwrap());
        rows.into_iter().for_each(|r| ledger.push(r));
        let mut periods = ledger.periods();
        let id = sub.to_string();
        let hours = [
            (id.clone(), at("2026-12-01T10:00:00Z"), 3),
            (id.clone(), at("2026-12-05T09:00:00Z"), 5),
            (id.clone(), at("2026-12-05T10:00:00Z"), 7),
            (id, at("2026-12-30T23:00:00Z"), 11),
            (Uuid::now_v7().to_string(), at("2026-12-02T00:00:00Z"), 100),
        ];
        count_calls(&mut periods, hours);
        assert_eq!(periods.iter().map(|p| p.calls).collect::<Vec<_>>(), [8, 18]);
    }

    #[test]
    fn totals_never_mix_currencies() {
        let line = |currency: &str, cost_minor| StatementLine { currency: currency.into(), cost_minor, ..StatementLine::default() };
        let t = totals(&[line("USD", 500), line("SAR", 1_999), line("USD", 0), line("USD", 250)]);
        let t: Vec<(&str, u64)> = t.iter().map(|t| (t.currency.as_str(), t.amount_minor)).collect();
        assert_eq!(t, [("SAR", 1_999), ("USD", 750)]);
        assert!(totals(&[]).is_empty());
    }
}
