//! Throttles shared by every control-plane replica: each key's count (see
//! [`crate::auth::backoff`]) lives in the `throttles` table, so two replicas behind one
//! load balancer count the same attempts. An attempt is one short transaction that locks
//! the key's row, computes and writes it back; several keys (a login's pair, account and
//! client) are counted in one transaction, all or none, always in the same order so that
//! two transactions never wait on each other crosswise.
//!
//! Keys are stored as the SHA-256 of `namespace:key`, so no email or client address is
//! kept in clear. The table is bounded by time, not by a key count: every row expires
//! once its window and block are over and the accounts' upkeep deletes it ([`prune`]);
//! a refused attempt adds no row (its transaction is rolled back), so rows are at most the
//! keys admitted within one window: signups per client at most the global signup limit
//! per hour, logins at most the logins the edge lets through in 15 minutes.
use std::time::Duration;

use chrono::{DateTime, DurationRound, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
    TransactionTrait,
    sea_query::{OnConflict, Query},
};
use sha2::{Digest, Sha256};

use super::backoff::{Entry, Policy};
use crate::{entity::throttles, error::Result};

/// What counting says: `Err(seconds to wait)` while a key is blocked.
pub type Verdict = std::result::Result<(), u64>;

/// Expired rows deleted per statement by [`prune`].
const PRUNE_BATCH: u64 = 10_000;
/// Tries to insert and lock a key's row.
const LOCK_TRIES: u32 = 3;
/// Statements per [`prune`] call: what is left waits for the next call.
const PRUNE_MAX_BATCHES: u32 = 100;

/// The stored form of a namespaced key.
fn hash(namespaced: &str) -> String {
    hex::encode(Sha256::digest(namespaced.as_bytes()))
}

/// One key as stored: its hash, and the hash of the key it is lifted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    hash: String,
    scope: Option<String>,
}

impl Key {
    /// The hash stored for this key, the scope of the keys lifted with it.
    pub fn stored(&self) -> &str {
        &self.hash
    }

    /// The same key, lifted together with every key of `scope` (a [`Key::stored`]).
    pub fn in_scope(mut self, scope: String) -> Self {
        self.scope = Some(scope);
        self
    }
}

/// A throttle: one namespace of keys and its back-off policy.
#[derive(Debug, Clone)]
pub struct Throttle {
    namespace: String,
    policy: Policy,
}

/// The database keeps microseconds (PostgreSQL); computing on the same precision keeps
/// the answers the same whatever the store.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::Duration::microseconds(1)).unwrap_or(t)
}

fn entry(row: &throttles::Model) -> Entry {
    Entry {
        failures: u32::try_from(row.failures).unwrap_or(0),
        window_start: row.window_start,
        blocked_until: row.blocked_until,
    }
}

impl Throttle {
    /// Keys of `namespace` (e.g. `login:pair`), blocked after `limit` attempts within
    /// `window`, first for `base_block`, then doubling up to `max_block`.
    pub fn new(namespace: &str, limit: u32, window: Duration, base_block: Duration, max_block: Duration) -> Self {
        Throttle { namespace: namespace.to_owned(), policy: Policy::new(limit, window, base_block, max_block) }
    }

    /// `raw` in this throttle's namespace, as stored.
    pub fn key(&self, raw: &str) -> Key {
        Key { hash: hash(&format!("{}:{raw}", self.namespace)), scope: None }
    }

    /// The row of `key`, locked until `txn` ends. The row is inserted first if absent
    /// (with no count, expiring at once), so that there is always a row to lock: two
    /// transactions counting a new key then queue on it instead of both inserting. On
    /// SQLite the insert also makes the transaction a writer from its first statement, so
    /// it waits for the lock rather than failing on a stale snapshot.
    /// A row [`prune`] deletes between the insert and the lock is inserted again; a few
    /// tries are plenty, as only expired rows are pruned.
    async fn lock(txn: &impl ConnectionTrait, key: &Key, now: DateTime<Utc>) -> Result<throttles::Model> {
        for _ in 0..LOCK_TRIES {
            let placeholder = throttles::Model {
                key: key.hash.clone(),
                scope: key.scope.clone(),
                failures: 0,
                window_start: now,
                blocked_until: None,
                expires_at: now,
            };
            throttles::Entity::insert(placeholder.into_active_model())
                .on_conflict(OnConflict::column(throttles::Column::Key).do_nothing().to_owned())
                .exec_without_returning(txn)
                .await?;
            if let Some(row) = throttles::Entity::find_by_id(key.hash.clone()).lock_exclusive().one(txn).await? {
                return Ok(row);
            }
        }
        Err(crate::Error::Internal("a throttle row kept vanishing before it could be locked".into()))
    }

    async fn store(&self, txn: &impl ConnectionTrait, row: throttles::Model, e: Entry) -> Result<()> {
        let expires_at = self.policy.expires_at(&e);
        let mut am = row.into_active_model();
        am.failures = Set(i32::try_from(e.failures).unwrap_or(i32::MAX));
        am.window_start = Set(e.window_start);
        am.blocked_until = Set(e.blocked_until);
        am.expires_at = Set(expires_at);
        am.update(txn).await?;
        Ok(())
    }

    /// Counts one attempt for `key` within `txn`, before it is verified: `Err(seconds)`
    /// while the key is blocked, and then nothing is written (roll `txn` back to drop
    /// what else it counted). See [`Policy::attempt`].
    pub async fn count(&self, txn: &impl ConnectionTrait, key: &Key, now: DateTime<Utc>) -> Result<Verdict> {
        let now = micros(now);
        let row = Self::lock(txn, key, now).await?;
        match self.policy.attempt(Some(entry(&row)), now) {
            Ok(e) => self.store(txn, row, e).await.map(Ok),
            Err(secs) => Ok(Err(secs)),
        }
    }

    /// Gives back one attempt counted for `key` within `txn`; lifts the block if the count
    /// falls below the limit again.
    pub async fn give_back(&self, txn: &impl ConnectionTrait, key: &Key, now: DateTime<Utc>) -> Result<()> {
        let row = Self::lock(txn, key, micros(now)).await?;
        if row.failures == 0 {
            return Ok(());
        }
        let e = self.policy.undo(entry(&row));
        self.store(txn, row, e).await
    }

    /// Clears `key` within `txn` (a success).
    pub async fn clear(txn: &impl ConnectionTrait, key: &Key) -> Result<()> {
        throttles::Entity::delete_by_id(key.hash.clone()).exec(txn).await?;
        Ok(())
    }

    /// Counts one attempt for `raw` in a transaction of its own.
    pub async fn attempt(&self, db: &DatabaseConnection, raw: &str, now: DateTime<Utc>) -> Result<Verdict> {
        attempt_all(db, &[(self, self.key(raw))], now).await
    }

    /// Gives back one attempt for `raw` in a transaction of its own.
    pub async fn undo(&self, db: &DatabaseConnection, raw: &str, now: DateTime<Utc>) -> Result<()> {
        undo_all(db, &[(self, self.key(raw))], now).await
    }

    /// Clears `raw` after a success.
    pub async fn success(&self, db: &DatabaseConnection, raw: &str) -> Result<()> {
        Self::clear(db, &self.key(raw)).await
    }
}

/// Counts one attempt on every key, in the order given, in one transaction: all are
/// counted, or none when one is blocked (`Err(seconds)` of the first blocked key).
pub async fn attempt_all(db: &DatabaseConnection, keys: &[(&Throttle, Key)], now: DateTime<Utc>) -> Result<Verdict> {
    let txn = db.begin().await?;
    for (throttle, key) in keys {
        if let Err(secs) = throttle.count(&txn, key, now).await? {
            txn.rollback().await?;
            return Ok(Err(secs));
        }
    }
    txn.commit().await?;
    Ok(Ok(()))
}

/// Gives back one attempt on every key, in the order given, in one transaction.
pub async fn undo_all(db: &DatabaseConnection, keys: &[(&Throttle, Key)], now: DateTime<Utc>) -> Result<()> {
    let txn = db.begin().await?;
    for (throttle, key) in keys {
        throttle.give_back(&txn, key, now).await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Deletes every row lifted with `scope` (a [`Key::stored`]).
pub async fn forget_scope(db: &impl ConnectionTrait, scope: &str) -> Result<u64> {
    let done = throttles::Entity::delete_many().filter(throttles::Column::Scope.eq(scope)).exec(db).await?;
    Ok(done.rows_affected)
}

/// Deletes rows whose window and block are over at `now`, which count as absent anyway;
/// at most `PRUNE_BATCH * PRUNE_MAX_BATCHES` in one call. Returns the rows deleted.
pub async fn prune(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64> {
    let now = micros(now);
    let mut deleted = 0;
    for _ in 0..PRUNE_MAX_BATCHES {
        let batch = Query::select()
            .column(throttles::Column::Key)
            .from(throttles::Entity)
            .and_where(throttles::Column::ExpiresAt.lte(now))
            .limit(PRUNE_BATCH)
            .to_owned();
        // The outer condition is checked again on a row a concurrent attempt has just
        // renewed (PostgreSQL rechecks it after the row lock), so a live count is kept.
        let done = throttles::Entity::delete_many()
            .filter(throttles::Column::ExpiresAt.lte(now))
            .filter(throttles::Column::Key.in_subquery(batch))
            .exec(db)
            .await?;
        deleted += done.rows_affected;
        if done.rows_affected < PRUNE_BATCH {
            break;
        }
    }
    Ok(deleted)
}
