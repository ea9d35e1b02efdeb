//! Login throttling that an attacker cannot turn into a lockout: attempts are counted per
//! (account, client) pair, so guesses from one address block only that address for that
//! account; a much higher ceiling per account across every client stops a guessing
//! swarm, and a cap per client stops one address from trying many accounts. The counts
//! are in the database ([`crate::auth::throttle`]), shared by every replica.
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, TransactionTrait};

use super::throttle::{self, Key, Throttle, Verdict};
use crate::error::Result;

/// Password checks one client may have per account per window before it is blocked.
pub const PAIR_LIMIT: u32 = 5;
/// Password checks per account per window across all clients.
pub const ACCOUNT_CEILING: u32 = 100;
/// Password checks per client per window across all accounts.
pub const CLIENT_LIMIT: u32 = 50;
/// The counting window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The three throttles a password check passes, in order: pair, account, client.
#[derive(Debug)]
pub struct LoginThrottle {
    pair: Throttle,
    account: Throttle,
    client: Throttle,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        let minute = Duration::from_secs(60);
        LoginThrottle {
            // Backs off from 1 to 15 minutes: only the guessing address waits.
            pair: Throttle::new("login:pair", PAIR_LIMIT, WINDOW, minute, WINDOW),
            // A fixed window: a block lasts one window and then the count starts afresh, so
            // a trickle of requests cannot keep the account blocked.
            account: Throttle::new("login:account", ACCOUNT_CEILING, WINDOW, WINDOW, WINDOW),
            client: Throttle::new("login:client", CLIENT_LIMIT, WINDOW, minute, WINDOW),
        }
    }
}

impl LoginThrottle {
    /// The account's key; its hash is also the scope of every pair of the account.
    fn account_key(&self, account: &str) -> Key {
        self.account.key(account)
    }

    /// The three keys in the order every transaction takes them: pair, account, client.
    /// The account's length in front of the pair keeps it unambiguous; the pair is lifted
    /// with its account.
    fn keys(&self, account: &str, client: &str) -> [(&Throttle, Key); 3] {
        let account_key = self.account_key(account);
        let scope = account_key.stored().to_owned();
        let pair = self.pair.key(&format!("{}:{account}{client}", account.len())).in_scope(scope);
        [(&self.pair, pair), (&self.account, account_key), (&self.client, self.client.key(client))]
    }

    /// Counts one password check for `account` from `client` before it runs, in one
    /// transaction: `Ok(Err(seconds))` when any of the three is blocked, and then nothing
    /// is counted. A database error is an error: the caller must refuse the check.
    pub async fn attempt(
        &self,
        db: &DatabaseConnection,
        account: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<Verdict> {
        throttle::attempt_all(db, &self.keys(account, client), now).await
    }

    /// Gives back a check that got no verdict.
    pub async fn undo(&self, db: &DatabaseConnection, account: &str, client: &str, now: DateTime<Utc>) -> Result<()> {
        throttle::undo_all(db, &self.keys(account, client), now).await
    }

    /// After a right password: the pair starts afresh and the check is given back to the
    /// account and the client.
    pub async fn success(
        &self,
        db: &DatabaseConnection,
        account: &str,
        client: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let [(_, pair), (account_throttle, account_key), (client_throttle, client_key)] = self.keys(account, client);
        let txn = db.begin().await?;
        Throttle::clear(&txn, &pair).await?;
        account_throttle.give_back(&txn, &account_key, now).await?;
        client_throttle.give_back(&txn, &client_key, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Lifts every block on `account` (a completed password reset): its ceiling and all
    /// its pairs start afresh. The pairs go first, in the order attempts take the keys.
    pub async fn lift(&self, db: &DatabaseConnection, account: &str) -> Result<()> {
        let account_key = self.account_key(account);
        throttle::forget_scope(db, account_key.stored()).await?;
        Throttle::clear(db, &account_key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_db::Replicas;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[tokio::test]
    async fn one_address_cannot_lock_the_account_for_another() {
        let t = Replicas::new().await;
        let db = &t.a;
        let th = LoginThrottle::default();
        let now = t0();
        for _ in 0..PAIR_LIMIT {
            assert_eq!(th.attempt(db, "victim@x.y", "10.0.0.66", now).await.unwrap(), Ok(()));
        }
        assert!(
            th.attempt(db, "victim@x.y", "10.0.0.66", now).await.unwrap().is_err(),
            "the attacker's pair is blocked"
        );
        // The attacker keeps trying once every 15 minutes: only its own pair stays blocked.
        let later = now + chrono::Duration::minutes(15);
        let _ = th.attempt(db, "victim@x.y", "10.0.0.66", later).await.unwrap();
        assert_eq!(
            th.attempt(db, "victim@x.y", "10.0.0.7", later).await.unwrap(),
            Ok(()),
            "the owner elsewhere gets in"
        );
        t.close().await;
    }

    #[tokio::test]
    async fn the_account_ceiling_holds_across_clients_and_ends_with_its_window() {
        let t = Replicas::new().await;
        let db = &t.a;
        let th = LoginThrottle::default();
        let now = t0();
        let mut admitted = 0;
        for i in 0..300 {
            if th.attempt(db, "a@x.y", &format!("10.0.{}.{}", i / 250, i % 250), now).await.unwrap().is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, ACCOUNT_CEILING);
        let after = now + chrono::Duration::from_std(WINDOW).unwrap() + chrono::Duration::seconds(1);
        assert_eq!(
            th.attempt(db, "a@x.y", "10.9.9.9", after).await.unwrap(),
            Ok(()),
            "one window later the count starts afresh"
        );
        t.close().await;
    }

    #[tokio::test]
    async fn a_reset_lifts_every_block_of_the_account_only() {
        let t = Replicas::new().await;
        let db = &t.a;
        let th = LoginThrottle::default();
        let now = t0();
        for _ in 0..PAIR_LIMIT {
            th.attempt(db, "a@x.y", "1.1.1.1", now).await.unwrap().unwrap();
            th.attempt(db, "a@x.yz", "1.1.1.1", now).await.unwrap().unwrap();
        }
        assert!(th.attempt(db, "a@x.y", "1.1.1.1", now).await.unwrap().is_err());
        th.lift(db, "a@x.y").await.unwrap();
        assert_eq!(th.attempt(db, "a@x.y", "1.1.1.1", now).await.unwrap(), Ok(()), "lifted");
        assert!(
            th.attempt(db, "a@x.yz", "1.1.1.1", now).await.unwrap().is_err(),
            "another account that shares a prefix is not"
        );
        t.close().await;
    }

    #[tokio::test]
    async fn a_blocked_check_counts_nothing_and_success_and_undo_give_back() {
        let t = Replicas::new().await;
        let db = &t.a;
        let th = LoginThrottle::default();
        let now = t0();
        // The client is blocked on other accounts; the check on a new pair counts nowhere.
        for i in 0..CLIENT_LIMIT {
            th.attempt(db, &format!("u{i}@x.y"), "9.9.9.9", now).await.unwrap().unwrap();
        }
        for _ in 0..(PAIR_LIMIT + 3) {
            assert!(th.attempt(db, "fresh@x.y", "9.9.9.9", now).await.unwrap().is_err());
        }
        for _ in 0..PAIR_LIMIT {
            assert_eq!(
                th.attempt(db, "fresh@x.y", "8.8.8.8", now).await.unwrap(),
                Ok(()),
                "the pair from 9.9.9.9 never counted"
            );
        }
        // Undo and success give attempts back: five more from a new client fit after five undos.
        for _ in 0..PAIR_LIMIT {
            th.undo(db, "fresh@x.y", "8.8.8.8", now).await.unwrap();
        }
        for _ in 0..(PAIR_LIMIT - 1) {
            th.attempt(db, "fresh@x.y", "8.8.8.8", now).await.unwrap().unwrap();
        }
        th.success(db, "fresh@x.y", "8.8.8.8", now).await.unwrap();
        for _ in 0..(PAIR_LIMIT - 1) {
            th.attempt(db, "fresh@x.y", "8.8.8.8", now).await.unwrap().unwrap();
        }
        assert_eq!(th.attempt(db, "fresh@x.y", "8.8.8.8", now).await.unwrap(), Ok(()), "the success cleared the pair");
        t.close().await;
    }
}
