//! Who may call what, as the control plane streams it (`Metering.WatchAccess`): every
//! live API key by the SHA-256 of the whole key, and every subscription's grant by
//! (consumer, API). A call looks both up in memory, in the latest table followed.
pub mod credential;

use std::{collections::HashMap, sync::Arc};

use souq_proto::metering::{AccessTable as WireTable, WatchAccessRequest, metering_client::MeteringClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::debug;

use crate::followed::{self, Followed, MAX_TABLE_BYTES, Table};

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
                Err(_) => {
                    tracing::warn!(key_id = %k.key_id, "access table names a key hash that is not 32 bytes")
                }
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

impl Table for AccessTable {
    type Wire = WireTable;

    fn is_placeholder(wire: &WireTable) -> bool {
        wire.generation == 0 && wire.keys.is_empty() && wire.grants.is_empty()
    }

    fn from_wire(wire: WireTable, _previous: &AccessTable) -> Self {
        AccessTable::from_wire(wire)
    }
}

/// Follows `Metering.WatchAccess` into `table` until `shutdown`, reconnecting with
/// backoff; while the control plane is away, the last table keeps serving (a revocation
/// arrives as a new table, which the control plane sends at once).
pub async fn follow(
    table: Arc<Followed<AccessTable>>,
    channel: Channel,
    join_token: String,
    shutdown: CancellationToken,
) {
    let client = MeteringClient::new(channel).max_decoding_message_size(MAX_TABLE_BYTES);
    let open = move || {
        let mut client = client.clone();
        let mut req = tonic::Request::new(WatchAccessRequest {});
        souq_proto::set_bearer(&mut req, &join_token);
        async move { client.watch_access(req).await.map(tonic::Response::into_inner) }
    };
    followed::follow(&table, "access", open, shutdown, |t: &AccessTable| {
        debug!(generation = t.generation, keys = t.key_count(), grants = t.grant_count(), "access table updated");
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use souq_proto::metering::{Grant as WireGrant, KeyEntry};

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
        let access = Followed::<AccessTable>::default();
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
    async fn resubscribes_and_keeps_the_last_table_when_the_control_plane_goes() {
        const JOIN: &str = "join-token-0123456789";
        let feed = souq_test_support::Feed::one_per_watch(|generation| WireTable {
            generation,
            keys: vec![KeyEntry { sha256: vec![1; 32], key_id: format!("k{generation}"), user_id: "u".into() }],
            grants: vec![],
        });
        let server = souq_test_support::FakeMetering::new(feed).expecting_join_token(JOIN).serve().await;
        let access = Arc::new(Followed::<AccessTable>::default());
        let channel = tonic::transport::Endpoint::from_shared(server.url()).expect("url").connect_lazy();
        let stop = CancellationToken::new();
        let follower = tokio::spawn(follow(access.clone(), channel, JOIN.into(), stop.clone()));

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while access.snapshot().generation < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no second table");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let kept = access.snapshot();
        assert!(kept.generation >= 2 && kept.key(&[1; 32]).is_some(), "the last table is kept");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .expect("the follower ends at shutdown")
            .expect("join");
    }
}
