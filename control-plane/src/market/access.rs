//! The access table the edges enforce: every live key by hash, and every subscription as a
//! grant with its plan's limits and this month's committed calls. Built like the route
//! table (a pure `build`, a `refresh` publishing on a watch channel): management changes
//! rebuild it at once, committed usage marks it stale for a debounced rebuild.
use std::{collections::HashMap, sync::Arc, time::Duration};

use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};
use souq_proto::metering::{AccessTable, Grant, KeyEntry};
use tokio::sync::{Mutex, Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::{Market, Month, calls, history, to_u64};
use crate::{
    entity::{api_keys, plans, subscriptions, usage_windows},
    error::Result,
};

/// Usage commits rebuild the table at most this often.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// The table is rebuilt at least this often, so a new month's counts start from zero.
pub const PERIOD: Duration = Duration::from_secs(60);

/// The published access table and what drives its rebuilds.
pub struct AccessFeed {
    tx: watch::Sender<Arc<AccessTable>>,
    /// Held through a rebuild: two rebuilds that overlap could otherwise publish the older
    /// reading last (a revoked key coming back until the next one).
    rebuilding: Mutex<()>,
    /// Usage was committed since the last rebuild.
    stale: Notify,
}

impl AccessFeed {
    /// An empty feed; [`refresh`] fills it before any edge is served.
    pub fn new() -> Self {
        AccessFeed { tx: watch::Sender::new(Arc::new(AccessTable::default())), rebuilding: Mutex::new(()), stale: Notify::new() }
    }

    /// The current table, and each one after it.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AccessTable>> {
        self.tx.subscribe()
    }

    /// Asks the background task for a rebuild soon (debounced).
    pub fn mark_stale(&self) {
        self.stale.notify_one();
    }
}

impl Default for AccessFeed {
    fn default() -> Self {
        Self::new()
    }
}

/// The table's entries: live keys (a malformed stored hash is skipped) sorted by id, and the
/// grants of subscriptions whose plan is known, sorted by subscription id.
pub fn build(
    keys: &[api_keys::Model],
    subs: &[subscriptions::Model],
    plans: &HashMap<Uuid, plans::Model>,
    used: &HashMap<String, u64>,
    month: Month,
) -> (Vec<KeyEntry>, Vec<Grant>) {
    let mut entries: Vec<KeyEntry> = keys
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .filter_map(|k| {
            let sha256 = hex::decode(&k.sha256).ok().filter(|h| h.len() == 32)?;
            Some(KeyEntry { sha256, key_id: k.id.to_string(), user_id: k.user_id.to_string() })
        })
        .collect();
    entries.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    let month = month.to_string();
    let mut grants: Vec<Grant> = subs
        .iter()
        .filter_map(|s| {
            let plan = plans.get(&s.plan_id)?;
            let id = s.id.to_string();
            Some(Grant {
                used_this_month: used.get(&id).copied().unwrap_or(0),
                subscription_id: id,
                user_id: s.user_id.to_string(),
                api_id: s.api_id.to_string(),
                plan_id: plan.id.to_string(),
                rate_limit_per_minute: u32::try_from(plan.rate_limit_per_minute).unwrap_or(0),
                monthly_quota: to_u64(plan.monthly_quota),
                month: month.clone(),
            })
        })
        .collect();
    grants.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
    (entries, grants)
}

/// Rebuilds the table from the database and publishes it if it changed.
pub(crate) async fn refresh(market: &Market) -> Result<()> {
    let _turn = market.access.rebuilding.lock().await;
    let db = &market.db;
    let now = market.clock.now();
    let month = Month::of(now);
    // A new month puts pending downgrades in force before their limits are published.
    history::settle(db, now).await?;
    let keys = api_keys::Entity::find().filter(api_keys::Column::RevokedAt.is_null()).all(db).await?;
    let subs = subscriptions::Entity::find().all(db).await?;
    let plans: HashMap<Uuid, plans::Model> = plans::Entity::find().all(db).await?.into_iter().map(|p| (p.id, p)).collect();
    let with_sub = Condition::all().add(usage_windows::Column::SubscriptionId.ne(""));
    let used = calls::in_month(db, usage_windows::Column::SubscriptionId, with_sub, month).await?;
    let (keys, grants) = build(&keys, &subs, &plans, &used, month);
    market.access.tx.send_if_modified(|table| {
        if table.keys == keys && table.grants == grants {
            return false;
        }
        *table = Arc::new(AccessTable { generation: table.generation + 1, keys, grants });
        true
    });
    Ok(())
}

/// Rebuilds at once after a management change; on failure the background task retries, and
/// the change (already committed) stands.
pub(crate) async fn publish_now(market: &Market) {
    if let Err(e) = refresh(market).await {
        warn!(error = %e, "access table rebuild failed; retrying in the background");
        market.access.mark_stale();
    }
}

/// Rebuilds when usage marks the table stale, at most once per [`DEBOUNCE`], and every
/// [`PERIOD`] regardless, until `shutdown`.
pub(crate) async fn run(market: Arc<Market>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = market.access.stale.notified() => {}
            () = tokio::time::sleep(PERIOD) => {}
        }
        if let Err(e) = refresh(&market).await {
            warn!(error = %e, "access table rebuild failed");
            market.access.mark_stale();
        }
        // Marks that arrive meanwhile leave one permit: a busy flusher costs one rebuild
        // per DEBOUNCE, however often it commits.
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(DEBOUNCE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    #[test]
    fn the_table_holds_live_keys_and_every_grant_with_its_month_usage() {
        let now = Utc::now();
        let user = Uuid::now_v7();
        let key = |revoked: bool, sha256: String| api_keys::Model {
            id: Uuid::now_v7(),
            user_id: user,
            name: "k".into(),
            prefix: "souq_abcdefgh".into(),
            sha256,
            created_at: now,
            revoked_at: revoked.then_some(now),
        };
        let live = key(false, "ab".repeat(32));
        let keys = [live.clone(), key(true, "cd".repeat(32)), key(false, "not hex".into())];
        let api = Uuid::now_v7();
        let plan = crate::market::plans::free(api, now);
        let sub = subscriptions::Model {
            id: Uuid::now_v7(),
            user_id: user,
            api_id: api,
            plan_id: plan.id,
            created_at: now,
            pending_plan_id: None,
            plan_changes_at: None,
        };
        let orphan = subscriptions::Model { id: Uuid::now_v7(), plan_id: Uuid::now_v7(), ..sub.clone() };
        let plans = HashMap::from([(plan.id, plan.clone())]);
        let used = HashMap::from([(sub.id.to_string(), 42)]);
        let month = Month::parse("2025-03").unwrap();
        let (entries, grants) = build(&keys, &[sub.clone(), orphan], &plans, &used, month);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].sha256, vec![0xab; 32]);
        assert_eq!(entries[0].key_id, live.id.to_string());
        assert_eq!(grants.len(), 1);
        let g = &grants[0];
        assert_eq!((g.used_this_month, g.monthly_quota, g.rate_limit_per_minute), (42, 1000, 60));
        assert_eq!((g.month.as_str(), g.plan_id.clone()), ("2025-03", plan.id.to_string()));
    }
}
