//! `Metering.ReportUsage`: commits a batch of usage events exactly once, in one transaction
//! that moves the source's committed position together with the windows it counted.
use chrono::Duration;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use souq_proto::metering::{UsageAck, UsageBatch};
use uuid::Uuid;

use super::{
    Market,
    batch::{self, Position, Tally, WindowKey},
    histogram::Histogram,
    to_i64,
};
use crate::{
    entity::{usage_batches, usage_sources, usage_windows},
    error::{Error, Result},
};

/// How long a batch id is remembered. The committed position is what keeps a batch from
/// counting twice; the id only answers a resend cheaply, so old ones can go.
const KEEP_BATCH_IDS: Duration = Duration::days(7);

/// Commits the events of `batch` past its source's committed position, and answers how
/// far the source is committed. A batch sent again (same id, or only old events) commits
/// nothing new; a failure commits nothing at all, and the edge sends the batch again.
pub(crate) async fn report(market: &Market, batch: UsageBatch) -> Result<UsageAck> {
    let checked = batch::check(&batch)?;
    let Some(last) = checked.events.last().map(|e| e.position) else {
        // An empty batch asks how far the source is committed.
        let row = usage_sources::Entity::find_by_id(checked.source.clone()).one(&market.db).await?;
        let through = batch::committed(row.as_ref().map_or("", |r| r.committed_through.as_str()))?;
        return Ok(UsageAck { committed_through: through.map(|p| p.to_string()).unwrap_or_default(), committed: 0 });
    };
    let now = market.clock.now();
    let txn = market.db.begin().await?;
    // The source's row is claimed first and held to the end: batches of one source take
    // turns (PostgreSQL locks the row; SQLite has a single writer anyway).
    usage_sources::Entity::insert(usage_sources::ActiveModel {
        source: Set(checked.source.clone()),
        committed_through: Set(String::new()),
        updated_at: Set(now),
    })
    .on_conflict(OnConflict::column(usage_sources::Column::Source).do_nothing().to_owned())
    .exec_without_returning(&txn)
    .await?;
    let source = usage_sources::Entity::find_by_id(checked.source.clone())
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or_else(|| Error::Internal("usage source row vanished".into()))?;
    let through = batch::committed(&source.committed_through)?;
    if usage_batches::Entity::find_by_id(checked.batch_id.clone()).one(&txn).await?.is_some() {
        txn.rollback().await?;
        return Ok(ack(through, 0));
    }
    let fresh = batch::fresh(&checked.events, through);
    for (key, tally) in batch::fold(fresh) {
        add_to_window(&txn, &key, &tally).await?;
    }
    let committed = u32::try_from(fresh.len()).unwrap_or(u32::MAX);
    usage_batches::Entity::insert(usage_batches::ActiveModel {
        batch_id: Set(checked.batch_id.clone()),
        source: Set(checked.source.clone()),
        events: Set(i32::try_from(committed).unwrap_or(i32::MAX)),
        committed_at: Set(now),
    })
    .exec_without_returning(&txn)
    .await?;
    let through = through.max(Some(last));
    usage_sources::Entity::update_many()
        .col_expr(usage_sources::Column::CommittedThrough, Expr::value(through.map(|p| p.to_string()).unwrap_or_default()))
        .col_expr(usage_sources::Column::UpdatedAt, Expr::value(now))
        .filter(usage_sources::Column::Source.eq(&checked.source))
        .exec(&txn)
        .await?;
    usage_batches::Entity::delete_many()
        .filter(usage_batches::Column::Source.eq(&checked.source))
        .filter(usage_batches::Column::CommittedAt.lt(now - KEEP_BATCH_IDS))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    tracing::debug!(source = %checked.source, committed, through = ?through.map(|p| p.to_string()), "usage committed");
    if committed > 0 {
        market.access.mark_stale();
    }
    Ok(ack(through, committed))
}

fn ack(through: Option<Position>, committed: u32) -> UsageAck {
    UsageAck { committed_through: through.map(|p| p.to_string()).unwrap_or_default(), committed }
}

/// Adds a tally to its window's row: a new row if the window has none, else the row is
/// locked, read, and written back with the sums. Rows are visited in key order in every
/// transaction, so two sources' batches touching the same windows never deadlock.
async fn add_to_window(txn: &DatabaseTransaction, key: &WindowKey, t: &Tally) -> Result<()> {
    use usage_windows::Column as C;
    let row = usage_windows::ActiveModel {
        id: Set(Uuid::now_v7()),
        window_start: Set(key.start),
        api_id: Set(key.api_id.clone()),
        user_id: Set(key.user_id.clone()),
        key_id: Set(key.key_id.clone()),
        subscription_id: Set(key.subscription_id.clone()),
        kind: Set(key.kind.clone()),
        calls: Set(to_i64(t.calls)),
        errors: Set(to_i64(t.errors)),
        bytes_in: Set(to_i64(t.bytes_in)),
        bytes_out: Set(to_i64(t.bytes_out)),
        cpu_us: Set(to_i64(t.cpu_us)),
        latency_hist: Set(t.latency.to_json()),
    };
    let unique = [C::WindowStart, C::ApiId, C::UserId, C::KeyId, C::SubscriptionId, C::Kind];
    let inserted = usage_windows::Entity::insert(row)
        .on_conflict(OnConflict::columns(unique).do_nothing().to_owned())
        .exec_without_returning(txn)
        .await?;
    if inserted > 0 {
        return Ok(());
    }
    let old = usage_windows::Entity::find()
        .filter(C::WindowStart.eq(key.start))
        .filter(C::ApiId.eq(&key.api_id))
        .filter(C::UserId.eq(&key.user_id))
        .filter(C::KeyId.eq(&key.key_id))
        .filter(C::SubscriptionId.eq(&key.subscription_id))
        .filter(C::Kind.eq(&key.kind))
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or_else(|| Error::Internal("usage window row vanished".into()))?;
    let mut latency = Histogram::from_json(&old.latency_hist).unwrap_or_else(|| {
        tracing::warn!(window_id = %old.id, "unreadable latency histogram; it starts afresh");
        Histogram::default()
    });
    latency.merge(&t.latency);
    let plus = |a: i64, b: u64| a.saturating_add(to_i64(b));
    usage_windows::Entity::update_many()
        .col_expr(C::Calls, Expr::value(plus(old.calls, t.calls)))
        .col_expr(C::Errors, Expr::value(plus(old.errors, t.errors)))
        .col_expr(C::BytesIn, Expr::value(plus(old.bytes_in, t.bytes_in)))
        .col_expr(C::BytesOut, Expr::value(plus(old.bytes_out, t.bytes_out)))
        .col_expr(C::CpuUs, Expr::value(plus(old.cpu_us, t.cpu_us)))
        .col_expr(C::LatencyHist, Expr::value(latency.to_json()))
        .filter(C::Id.eq(old.id))
        .exec(txn)
        .await?;
    Ok(())
}
