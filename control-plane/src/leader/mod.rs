//! Leader election on the database, with fencing: one replica of the control plane holds
//! the `reconciler` lease and alone reconciles, places and commands agents.
//!
//! The lease is one row (`control_plane_lease`): holder, epoch, expiry. A replica takes a
//! lease only once it has expired, with a compare-and-set that bumps the epoch; the holder
//! renews it every [`RENEW_EVERY`] for [`TTL`]. A holder that cannot renew (database down,
//! process paused) steps down [`STEP_DOWN_MARGIN`] before its lease could expire, by its
//! monotonic clock. None of that is what keeps two leaders apart, though: every write the
//! leader makes runs in a [`fenced`] transaction that first locks the lease row at its own
//! epoch, and every command it sends an agent carries the epoch, which agents refuse once
//! they have seen a newer one (`souq_proto::fence`).
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter, TransactionTrait, sea_query::Expr,
};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    entity::leases,
    error::{Error, Result},
    metrics::Metrics,
};

/// The lease the reconciler runs under (the row the migration inserts).
pub const LEASE: &str = "reconciler";
/// How long a lease lasts from its last renewal: how long the cluster may go without a
/// leader when one dies without releasing it.
pub const TTL: Duration = Duration::from_secs(6);
/// How often the leader renews (and a follower reads the lease, to take it once expired).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How long before its lease could expire a leader that failed to renew steps down. It
/// covers the clock difference between replicas (the expiry is written by the holder's
/// wall clock, read by the others' wall clocks) and the time a renewal takes to commit.
pub const STEP_DOWN_MARGIN: Duration = Duration::from_secs(2);

/// A lease's timings; [`Timings::DEFAULT`] in production, shorter ones in tests.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// See [`TTL`].
    pub ttl: Duration,
    /// See [`RENEW_EVERY`].
    pub renew_every: Duration,
    /// See [`STEP_DOWN_MARGIN`].
    pub margin: Duration,
}

impl Timings {
    /// [`TTL`], [`RENEW_EVERY`], [`STEP_DOWN_MARGIN`].
    pub const DEFAULT: Timings = Timings { ttl: TTL, renew_every: RENEW_EVERY, margin: STEP_DOWN_MARGIN };

    /// How long a leader leads after the start of its last successful renewal.
    fn lead_for(self) -> Duration {
        self.ttl.saturating_sub(self.margin)
    }
}

/// This replica's view of the lease: whether it leads (and under which epoch), and the
/// highest epoch it has read. Cheap to share; [`Leadership::run`] keeps it current.
pub struct Leadership {
    db: DatabaseConnection,
    name: String,
    holder: String,
    timings: Timings,
    leading: watch::Sender<Option<u64>>,
    /// The epoch led and the instant (monotonic) this replica stops leading unless it
    /// renews first: checked right before each command, so a replica that was paused
    /// does not command under a lease that may have expired meanwhile.
    until: Mutex<Option<(u64, Instant)>>,
    seen: AtomicU64,
    /// Where whether this replica leads, and the highest epoch seen, are shown.
    metrics: Arc<Metrics>,
}

/// This replica's holder id: `<hostname>/<8 random hex>`. Cluster tooling matches the
/// prefix to the container's hostname; the suffix tells apart two runs on one host.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.trim().is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    // A hostname is at most 253 bytes; keep the id bounded whatever the file says.
    let host: String = host.chars().filter(|c| !c.is_control()).take(253).collect();
    let mut suffix = [0u8; 4];
    if getrandom::fill(&mut suffix).is_err() {
        // Uniqueness, not secrecy, is what the suffix is for: the clock will do.
        suffix = Utc::now().timestamp_subsec_nanos().to_le_bytes();
    }
    format!("{host}/{}", hex::encode(suffix))
}

impl Leadership {
    /// The `reconciler` lease on `db`, sought as `holder`; nothing runs until [`Self::run`].
    pub fn new(db: DatabaseConnection, holder: String) -> Leadership {
        Leadership {
            db,
            name: LEASE.to_owned(),
            holder,
            timings: Timings::DEFAULT,
            leading: watch::Sender::new(None),
            until: Mutex::new(None),
            seen: AtomicU64::new(0),
            metrics: Arc::default(),
        }
    }

    /// The same, showing whether it leads and the epoch seen in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Leadership {
        Leadership { metrics, ..self }
    }

    /// The same with other timings (tests).
    pub fn with_timings(self, timings: Timings) -> Leadership {
        Leadership { timings, ..self }
    }

    /// This replica's holder id.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// "I lead with epoch N" (`Some(N)`) or "I follow" (`None`), now and on every change.
    pub fn leading(&self) -> watch::Receiver<Option<u64>> {
        self.leading.subscribe()
    }

    /// The epoch this replica leads under, if it leads.
    pub fn epoch(&self) -> Option<u64> {
        *self.leading.borrow()
    }

    /// Whether this replica leads under `epoch` at this instant, by its monotonic clock:
    /// false from [`STEP_DOWN_MARGIN`] before its lease could expire, even if the lease loop
    /// has not run since (a paused process).
    pub fn leads(&self, epoch: u64) -> bool {
        self.until.lock().is_ok_and(|u| u.is_some_and(|(e, until)| e == epoch && Instant::now() < until))
    }

    /// The highest epoch this replica has read from the lease (refreshed every tick).
    pub fn current_epoch(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Reads the lease now; returns the highest epoch seen.
    pub async fn refresh(&self) -> Result<u64> {
        let row = self.read().await?;
        Ok(self.saw(row.epoch))
    }

    fn saw(&self, epoch: i64) -> u64 {
        let epoch = u64::try_from(epoch).unwrap_or(0);
        let seen = self.seen.fetch_max(epoch, Ordering::SeqCst).max(epoch);
        self.metrics.set_epoch(seen);
        seen
    }

    async fn read(&self) -> Result<leases::Model> {
        leases::Entity::find_by_id(self.name.clone())
            .one(&self.db)
            .await?
            .ok_or_else(|| Error::Internal(format!("the lease row {:?} is missing (migration m0010)", self.name)))
    }

    /// Publishes whether this replica leads (under which epoch, until when), logging the
    /// change.
    fn publish(&self, lead: Option<(u64, Instant)>, why: &str) {
        if let Ok(mut until) = self.until.lock() {
            *until = lead;
        }
        let now = lead.map(|(epoch, _)| epoch);
        self.metrics.set_leading(now.is_some());
        let before = self.leading.send_replace(now);
        match (before, now) {
            (b, Some(e)) if b != Some(e) => info!(epoch = e, holder = %self.holder, "became leader"),
            (Some(e), None) => info!(epoch = e, holder = %self.holder, reason = why, "lost leadership"),
            _ => {}
        }
    }

    /// Keeps the lease until `shutdown`: takes it once expired, renews it while held, and
    /// steps down in time when renewing fails. At shutdown a held lease is released, so
    /// another replica need not wait for it to expire.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let t = self.timings;
        // The epoch led and the start of its last successful renewal (monotonic).
        let mut mine: Option<(u64, Instant)> = None;
        loop {
            let started = Instant::now();
            let deadline = mine.map(|(_, at)| at + t.lead_for());
            let outcome = tokio::select! {
                r = tokio::time::timeout(t.ttl, self.step(mine.map(|(e, _)| e))) => Some(r),
                () = sleep_until(deadline) => None,
                () = shutdown.cancelled() => break,
            };
            match outcome {
                Some(Ok(Ok(Some(epoch)))) => {
                    mine = Some((epoch, started));
                    self.publish(Some((epoch, started + t.lead_for())), "");
                }
                Some(Ok(Ok(None))) => {
                    mine = None;
                    self.publish(None, "another replica holds the lease");
                }
                Some(Ok(Err(e))) => warn!(error = %e, holder = %self.holder, "lease: the database failed"),
                Some(Err(_)) => warn!(holder = %self.holder, "lease: the database did not answer in time"),
                None => {}
            }
            if let Some((_, at)) = mine
                && Instant::now() >= at + t.lead_for()
            {
                mine = None;
                self.publish(None, "could not renew the lease in time");
            }
            let next = started + t.renew_every;
            let deadline = mine.map(|(_, at)| at + t.lead_for());
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = sleep_until(deadline) => {}
                () = shutdown.cancelled() => break,
            }
        }
        let held = self.epoch();
        self.publish(None, "shutting down");
        if let Some(epoch) = held {
            match tokio::time::timeout(t.renew_every, self.release(epoch)).await {
                Ok(Ok(())) => info!(epoch, holder = %self.holder, "released the lease"),
                Ok(Err(e)) => warn!(error = %e, "could not release the lease; it expires on its own"),
                Err(_) => warn!("could not release the lease in time; it expires on its own"),
            }
        }
    }

    /// One tick: renews the lease held under `mine`, or takes it if it expired. Returns
    /// the epoch led after it, or `None` when another replica leads (or none can yet).
    async fn step(&self, mine: Option<u64>) -> Result<Option<u64>> {
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(self.timings.ttl).unwrap_or(chrono::Duration::MAX);
        if let Some(epoch) = mine {
            let renewed = leases::Entity::update_many()
                .col_expr(leases::Column::ExpiresAt, expires.into())
                .filter(leases::Column::Name.eq(&self.name))
                .filter(leases::Column::Holder.eq(&self.holder))
                .filter(leases::Column::Epoch.eq(to_db(epoch)))
                .exec(&self.db)
                .await?;
            if renewed.rows_affected > 0 {
                self.saw(to_db(epoch));
                return Ok(Some(epoch));
            }
            // Taken over: learn the new epoch; take the lease again only once it expires.
            self.refresh().await?;
            return Ok(None);
        }
        let row = self.read().await?;
        self.saw(row.epoch);
        if row.expires_at >= now {
            return Ok(None);
        }
        let next = row.epoch.saturating_add(1);
        let taken = leases::Entity::update_many()
            .col_expr(leases::Column::Holder, self.holder.clone().into())
            .col_expr(leases::Column::Epoch, next.into())
            .col_expr(leases::Column::ExpiresAt, expires.into())
            .filter(leases::Column::Name.eq(&self.name))
            .filter(leases::Column::Epoch.eq(row.epoch))
            .filter(leases::Column::ExpiresAt.lt(now))
            .exec(&self.db)
            .await?;
        if taken.rows_affected == 0 {
            return Ok(None);
        }
        self.saw(next);
        Ok(Some(u64::try_from(next).unwrap_or(0)))
    }

    /// Ends the lease held under `epoch` now (the epoch stays; the next holder bumps it).
    async fn release(&self, epoch: u64) -> Result<()> {
        leases::Entity::update_many()
            .col_expr(leases::Column::ExpiresAt, DateTime::<Utc>::UNIX_EPOCH.into())
            .filter(leases::Column::Name.eq(&self.name))
            .filter(leases::Column::Holder.eq(&self.holder))
            .filter(leases::Column::Epoch.eq(to_db(epoch)))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

/// Begins a transaction that commits only under `epoch`: it first locks the lease row at
/// that epoch (`UPDATE … SET epoch = epoch WHERE name = 'reconciler' AND epoch = <epoch>`)
/// and is rolled back, with an error, when no row matches. On PostgreSQL the row lock
/// serialises with a new leader's takeover, so the transaction either commits before the
/// new epoch exists or is refused; SQLite has one writer at a time anyway.
///
/// Inside it, use only the transaction: on SQLite the pool has one connection.
pub(crate) async fn fenced(db: &DatabaseConnection, epoch: u64) -> Result<DatabaseTransaction> {
    let txn = db.begin().await?;
    let held = leases::Entity::update_many()
        .col_expr(leases::Column::Epoch, Expr::col(leases::Column::Epoch))
        .filter(leases::Column::Name.eq(LEASE))
        .filter(leases::Column::Epoch.eq(to_db(epoch)))
        .exec(&txn)
        .await?;
    if held.rows_affected == 0 {
        txn.rollback().await?;
        return Err(Error::Internal(format!("fenced: epoch {epoch} is no longer the leader's; the write was refused")));
    }
    Ok(txn)
}

/// An epoch as the database stores it.
fn to_db(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

/// Sleeps until `deadline`; forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
