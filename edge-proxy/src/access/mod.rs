//! Who may call what, as the control plane streams it (`Routes.WatchAccess`): every live
//! API key by the SHA-256 of the whole key, and every subscription's grant by (consumer,
//! API). A call looks both up in memory; readers take a cheap `Arc` snapshot.
pub mod credential;
pub mod watch;

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch as signal;

use souq_proto::routes::AccessTable as WireTable;

/// The owner of a live API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    /// The key's id.
    pub key_id: String,
    /// The consumer it belongs to.
    pub user_id: String,
}

/// A consumer's subscription to an API, with its plan's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The subscription.
    pub subscription_id: String,
    /// The consumer.
    pub user_id: String,
    /// The API.
    pub api_id: String,
    /// The plan.
    pub plan_id: String,
    /// Calls a minute (and the burst).
    pub rate_limit_per_minute: u32,
    /// Calls a calendar month (UTC).
    pub monthly_quota: u64,
    /// Calls the control plane had committed in `month` when it built the table.
    pub used_this_month: u64,
    /// `YYYY-MM` that count is for.
    pub month: String,
}

/// One access table, indexed for the data path.
#[derive(Debug, Default)]
pub struct AccessTable {
    /// The control plane's generation; 0 when none was received.
    pub generation: u64,
    keys: HashMap<[u8; 32], KeyOwner>,
    /// consumer → API → grant: looked up by `&str` without building a key.
    grants: HashMap<String, HashMap<String, Arc<Grant>>>,
}

impl AccessTable {
    /// Indexes a table from the wire. A key hash that is not 32 bytes is skipped.
    pub fn from_wire(table: WireTable) -> Self {
        let mut keys = HashMap::with_capacity(table.keys.len());
        for k in table.keys {
            match <[u8; 32]>::try_from(k.sha256.as_slice()) {
                Ok(hash) => {
                    keys.insert(hash, KeyOwner { key_id: k.key_id, user_id: k.user_id });
                }
                Err(_) => tracing::warn!(key_id = %k.key_id, "access table names a key hash that is not 32 bytes"),
            }
        }
        let mut grants: HashMap<String, HashMap<String, Arc<Grant>>> = HashMap::new();
        for g in table.grants {
            let grant = Grant {
                subscription_id: g.subscription_id,
                user_id: g.user_id,
                api_id: g.api_id,
                plan_id: g.plan_id,
                rate_limit_per_minute: g.rate_limit_per_minute,
                monthly_quota: g.monthly_quota,
                used_this_month: g.used_this_month,
                month: g.month,
            };
            grants.entry(grant.user_id.clone()).or_default().insert(grant.api_id.clone(), Arc::new(grant));
        }
        AccessTable { generation: table.generation, keys, grants }
    }

    /// The owner of the key whose SHA-256 is `hash`.
    pub fn key(&self, hash: &[u8; 32]) -> Option<&KeyOwner> {
        self.keys.get(hash)
    }

    /// `user_id`'s grant for `api_id`.
    pub fn grant(&self, user_id: &str, api_id: &str) -> Option<&Arc<Grant>> {
        self.grants.get(user_id)?.get(api_id)
    }

    /// Whether the key `key_id` is live.
    pub fn has_key_id(&self, key_id: &str) -> bool {
        self.keys.values().any(|k| k.key_id == key_id)
    }

    /// How many keys the table holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many grants the table holds.
    pub fn grant_count(&self) -> usize {
        self.grants.values().map(HashMap::len).sum()
    }
}

/// The current table, shared by the watcher (one writer) and every call (readers).
#[derive(Debug)]
pub struct Access {
    current: RwLock<Arc<AccessTable>>,
    /// Tables received since start; 0 until the first.
    received: AtomicU64,
    /// Told of every installed table, for [`Access::wait_for`].
    installed: signal::Sender<u64>,
}

impl Default for Access {
    fn default() -> Self {
        Access { current: RwLock::default(), received: AtomicU64::new(0), installed: signal::Sender::new(0) }
    }
}

impl Access {
    /// A snapshot of the current table: one `Arc` clone under a read lock.
    pub fn snapshot(&self) -> Arc<AccessTable> {
        match self.current.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a table has been received since start.
    pub fn has_table(&self) -> bool {
        self.received.load(Ordering::Relaxed) > 0
    }

    /// Replaces the table with `wire`, unless `wire` is an empty placeholder (generation 0)
    /// and a real table is already held. Returns the new table when it was installed.
    pub fn install(&self, wire: WireTable) -> Option<Arc<AccessTable>> {
        if wire.generation == 0 && wire.keys.is_empty() && wire.grants.is_empty() && self.has_table() {
            return None;
        }
        let table = Arc::new(AccessTable::from_wire(wire));
        match self.current.write() {
            Ok(mut t) => *t = table.clone(),
            Err(poisoned) => *poisoned.into_inner() = table.clone(),
        }
        let n = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        self.installed.send_replace(n);
        Some(table)
    }

    /// Waits until the table satisfies `holds`, at most `patience`; whether it does.
    ///
    /// A management call that changes access (a new key, a subscription, a revocation)
    /// waits on this before answering, so the caller's next call through this edge already
    /// sees the change: the control plane pushes the new table at once, and this is the
    /// moment it lands.
    pub async fn wait_for(&self, holds: impl Fn(&AccessTable) -> bool, patience: Duration) -> bool {
        let mut installed = self.installed.subscribe();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            installed.borrow_and_update();
            if holds(&self.snapshot()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, installed.changed()).await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use souq_proto::routes::{Grant as WireGrant, KeyEntry};

    use super::*;

    pub(crate) fn wire_grant(user: &str, api: &str) -> WireGrant {
        WireGrant {
            subscription_id: format!("sub-{user}-{api}"),
            user_id: user.into(),
            api_id: api.into(),
            plan_id: "plan".into(),
            rate_limit_per_minute: 60,
            monthly_quota: 1000,
            used_this_month: 3,
            month: "2025-01".into(),
        }
    }

    #[test]
    fn indexes_keys_by_hash_and_grants_by_consumer_and_api() {
        let wire = WireTable {
            generation: 4,
            keys: vec![
                KeyEntry { sha256: vec![7; 32], key_id: "k1".into(), user_id: "u1".into() },
                KeyEntry { sha256: vec![1; 31], key_id: "short".into(), user_id: "u1".into() },
            ],
            grants: vec![wire_grant("u1", "a"), wire_grant("u1", "b"), wire_grant("u2", "a")],
        };
        let t = AccessTable::from_wire(wire);
        assert_eq!((t.generation, t.key_count(), t.grant_count()), (4, 1, 3));
        assert_eq!(t.key(&[7; 32]).map(|k| k.user_id.as_str()), Some("u1"));
        assert!(t.key(&[8; 32]).is_none());
        assert_eq!(t.grant("u1", "b").map(|g| g.subscription_id.as_str()), Some("sub-u1-b"));
        assert!(t.grant("u2", "b").is_none());
        assert!(t.grant("u3", "a").is_none());
    }

    #[test]
    fn a_new_table_replaces_the_old_but_a_placeholder_never_does() {
        let access = Access::default();
        assert!(!access.has_table());
        let full = WireTable { generation: 2, keys: vec![], grants: vec![wire_grant("u1", "a")] };
        assert!(access.install(full).is_some());
        assert!(access.install(WireTable::default()).is_none());
        assert_eq!(access.snapshot().grant_count(), 1);
        // A real table that is empty (everything revoked) is installed.
        assert!(access.install(WireTable { generation: 3, keys: vec![], grants: vec![] }).is_some());
        assert_eq!(access.snapshot().grant_count(), 0);
    }

    #[tokio::test]
    async fn waiting_for_a_change_ends_when_it_lands_or_at_the_deadline() {
        let access = Arc::new(Access::default());
        let has_grant = |t: &AccessTable| t.grant("u1", "a").is_some();
        assert!(!access.wait_for(has_grant, Duration::from_millis(50)).await);
        let later = access.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.install(WireTable { generation: 1, keys: vec![], grants: vec![] });
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.install(WireTable { generation: 2, keys: vec![], grants: vec![wire_grant("u1", "a")] });
        });
        let started = std::time::Instant::now();
        assert!(access.wait_for(has_grant, Duration::from_secs(5)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
